"""Resumable training checkpoints: the last few, the best one, and one on SIGTERM/SIGINT.

A training checkpoint holds everything a run needs to continue exactly where it stopped: model
weights, optimizer state (its step counter included), the random-generator states of dropout,
whatever `extra` state the trainer adds (the metrics logger's partial interval), and a
fingerprint of the config and tokenizer it belongs to. The input pipeline's position follows from
the step: the pipelines are deterministic, and a resumed run skips the batches already consumed.

With a key file (`train.encrypt_key_file`) checkpoints are encrypted at rest (`tfllm.encryption`):
written into TensorFlow's in-memory file system and sealed from there into the run dir, and
opened into memory again to be read (`opened_checkpoint`), so their plaintext never reaches a disk.
"""

import contextlib
import hashlib
import json
import math
import os
import signal

import keras
import tensorflow as tf

from tfllm.callbacks.signal_flag import SignalFlag
from tfllm.encryption import decrypt_into, encrypt_from, in_memory_directory, is_encrypted, read_key
from tfllm.errors import TrainingInterrupted, UserError
from tfllm.files import write_atomically
from tfllm.lora import checkpointed_weights

LATEST_DIR = "latest"
BEST_DIR = "best"


class Checkpointer(keras.callbacks.Callback):
    """Saves the training state after every validation, every `every` steps and on a signal.

    `directory/latest/` holds the last `keep` checkpoints, `directory/best/` the one with the
    best `monitor` value (lowest for `mode="min"`) and its step and value in `best.json`. Saves go
    through `tf.train.CheckpointManager`: TensorFlow writes the data under a temporary prefix and
    renames it, then rewrites the index file atomically, so a crash mid-save leaves the previous
    checkpoint the newest usable one. A checkpoint is never written from a non-finite loss.

    While training runs, SIGTERM and SIGINT (preemption, Ctrl-C) make it save at the end of the
    current step and raise `TrainingInterrupted`; `interrupted_at` then holds that step.

    Args:
        directory: str. The run's `checkpoints/` directory.
        keep: int. Recent checkpoints to keep.
        monitor: str. The validation metric that picks the best checkpoint.
        mode: `"min"` or `"max"`: whether lower or higher `monitor` is better.
        every: int. Also save every this many optimizer steps; 0 saves at validations only.
        extra: dict of name -> trackable saved along (e.g. `{"logger": logger.state}`).
        fingerprint: str. Identifies the config and tokenizer; stored in every checkpoint.
        handle_signals: bool. Install the SIGTERM/SIGINT handlers while training runs.
        base: the `base_record` of the checkpoint whose frozen weights the adapters train on, or
            None: a LoRA run's checkpoints hold only what trains, and name its base.
        key_file: str or None. Encrypt every checkpoint with the key in this file
            (`EncryptedCheckpointManager`).
    """

    def __init__(self, directory, keep=3, monitor="val_loss", mode="min", every=0, extra=None,
                 fingerprint="", handle_signals=False, base=None, key_file=None):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'. Received: mode={mode!r}")
        self.directory = directory
        self.keep = keep
        self.monitor = monitor
        self.mode = mode
        self.every = every
        self.extra = dict(extra or {})
        self.fingerprint = fingerprint
        self.handle_signals = handle_signals
        self.base = base
        self.key_file = key_file
        self.best_value = read_best(directory, monitor, mode)
        self.interrupted_at = None
        self._signals = SignalFlag()

    def _improved(self, value):
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self._checkpoint = training_checkpoint(self.model, self.extra, self.fingerprint, self.base)
        if self.key_file:
            key = read_key(self.key_file)
            manager = lambda directory, keep: EncryptedCheckpointManager(self._checkpoint, directory, keep, key)
        else:
            manager = lambda directory, keep: tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=keep)
        self._latest = manager(os.path.join(self.directory, LATEST_DIR), self.keep)
        self._best = manager(os.path.join(self.directory, BEST_DIR), 1)
        self._signals.number = None
        if self.handle_signals:
            self._signals.install()

    def stop_after_this_step(self, number):
        """Save at the end of the current step and raise `TrainingInterrupted` naming signal
        `number`, as if this process had received it (see `StopTogetherOnSignal`)."""
        self._signals.number = number

    def on_train_end(self, logs=None):
        self.release_signals()

    def release_signals(self):
        """Put back the signal handlers of before training. Keras skips `on_train_end` when an
        exception ends `fit`, so whoever catches one calls this too."""
        self._signals.release()

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self._signals.number is not None:
            self.interrupted_at = step
            saved = self.save_latest(step) if _finite(logs) else self._latest.latest_checkpoint
            name = signal.Signals(self._signals.number).name
            self.release_signals()
            # Raised, not `stop_training`: Keras would still run a validation before stopping.
            raise TrainingInterrupted(
                f"stopped by {name} at step {step}; the newest checkpoint is {saved}; "
                "run the same command again to resume"
            )
        # A validation follows the last step of an epoch, and the checkpoint is saved after it.
        epoch_end = batch + 1 >= self.params.get("steps", math.inf) or self.model.stop_training
        if self.every and step % self.every == 0 and not epoch_end and _finite(logs):
            self.save_latest(step)

    def save_latest(self, step):
        """Save the state at `step` into latest/ (once per step); returns its path."""
        path = os.path.join(self._latest.directory, f"ckpt-{step}")
        if self._latest.latest_checkpoint != path:
            path = self._latest.save(checkpoint_number=step)
        return path

    def on_epoch_end(self, epoch, logs=None):
        if not _finite(logs):
            return
        step = self._step()
        self.save_latest(step)
        value = (logs or {}).get(self.monitor)
        if value is not None and self._improved(value):
            self.best_value = float(value)
            self._best.save(checkpoint_number=step)
            info_path = os.path.join(self.directory, BEST_DIR, "best.json")
            write_atomically(info_path, json.dumps({"step": step, self.monitor: self.best_value}))


class EncryptedCheckpointManager:
    """`tf.train.CheckpointManager`'s `save` and `latest_checkpoint` for checkpoints encrypted
    at rest, in the same layout: `directory/ckpt-STEP.index`, `.data-*` and the `checkpoint`
    state file, which names them (and stays readable, so `tf.train.latest_checkpoint` and
    `checkpoints_in` find them).

    A checkpoint is written into memory (`ram://`), each of its files sealed under `key` with
    its own name as associated data and renamed into place, the index last: a crash leaves no
    index, so readers skip it. Then the state file is rewritten and checkpoints beyond `keep`
    deleted, as `CheckpointManager` does.
    """

    def __init__(self, checkpoint, directory, keep, key):
        self._checkpoint = checkpoint
        # Created on first use: `CheckpointManager`'s checkpoints hold it, and a restore expects it.
        checkpoint.save_counter  # noqa: B018
        self.directory = directory
        self.keep = keep
        self.key = key
        os.makedirs(directory, exist_ok=True)
        self._kept = checkpoints_in(directory)

    @property
    def latest_checkpoint(self):
        return self._kept[-1] if self._kept else None

    def save(self, checkpoint_number):
        path = os.path.join(self.directory, f"ckpt-{checkpoint_number}")
        name = os.path.basename(path)
        with in_memory_directory("tfllm-checkpoint") as scratch:
            written = self._checkpoint.write(f"{scratch}/{name}")
            data = sorted(tf.io.gfile.glob(f"{written}.data-*"))
            for source in data + [f"{written}.index"]:
                target = os.path.join(self.directory, os.path.basename(source))
                encrypt_from(source, target, self.key, os.path.basename(source))
        self._kept = [p for p in self._kept if p != path] + [path]
        stale, self._kept = self._kept[:-self.keep], self._kept[-self.keep:]
        # The text form of the `CheckpointState` proto, names relative to the directory, as
        # `CheckpointManager` writes it.
        state = "".join(f"all_model_checkpoint_paths: {json.dumps(os.path.basename(p))}\n" for p in self._kept)
        write_atomically(os.path.join(self.directory, "checkpoint"),
                         f"model_checkpoint_path: {json.dumps(name)}\n{state}")
        for old in stale:
            for file in tf.io.gfile.glob(f"{old}.index") + tf.io.gfile.glob(f"{old}.data-*"):
                tf.io.gfile.remove(file)
        return path


@contextlib.contextmanager
def opened_checkpoint(path, key_file=None):
    """Yields a path TensorFlow reads the checkpoint `path` from: `path` itself, or, for an
    encrypted checkpoint, its files opened with the key in `key_file` into memory (`ram://`)
    for the time of the `with`. `UserError` of one line when the key is missing or wrong, or a
    file changed."""
    index = f"{path}.index"
    if not (os.path.isfile(index) and is_encrypted(index)):
        yield path
        return
    if not key_file:
        raise UserError(f"checkpoint {path} is encrypted; pass --encrypt-key-file with its key, or set "
                        "train.encrypt_key_file in the run's config.yaml")
    key = read_key(key_file)
    name = os.path.basename(path)
    with in_memory_directory("tfllm-checkpoint") as scratch:
        for source in sorted(tf.io.gfile.glob(f"{path}.data-*")) + [index]:
            decrypt_into(source, key, os.path.basename(source), f"{scratch}/{os.path.basename(source)}")
        yield f"{scratch}/{name}"


def _finite(logs):
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


def read_best(directory, monitor, mode):
    """The best `monitor` value recorded in `directory/best/best.json`, or the worst possible."""
    worst = float("inf") if mode == "min" else -float("inf")
    path = os.path.join(directory, BEST_DIR, "best.json")
    if not os.path.exists(path):
        return worst
    with open(path, encoding="utf-8") as f:
        return float(json.load(f).get(monitor, worst))


def variables_in_order(variables):
    """A trackable dict of variables keyed by their position.

    Keras 3 models track their optimizer as an attribute, so a checkpoint of the model object
    would drag the optimizer along and restore it by list position into whatever optimizer
    exists at load time; variable paths embed auto-generated, process-dependent names
    (`dense_1`). The order of `model.weights` is fixed by the architecture, so keys are
    positions, and a restore checks every shape.
    """
    module = tf.Module()
    module.variables_in_order = {f"{i:05d}": v for i, v in enumerate(variables)}
    return module


def rng_variables(model):
    """The random-generator states (dropout seeds) of `model`: its variables that are not weights."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def training_checkpoint(model, extra=None, fingerprint="", base=None):
    """Model weights (`checkpointed_weights`: what trains, once adapters are on), optimizer
    state (the optimizer must be built), RNG states, `extra` trackables, the run fingerprint
    and the `base` record of a LoRA run."""
    run = tf.Module()
    run.fingerprint = tf.Variable(fingerprint, dtype=tf.string, trainable=False)
    for key, value in (base or {}).items():
        setattr(run, f"base_{key}", tf.Variable(value, dtype=tf.string, trainable=False))
    return tf.train.Checkpoint(
        model=variables_in_order(checkpointed_weights(model)),
        optimizer=variables_in_order(model.optimizer.variables),
        rng=variables_in_order(rng_variables(model)),
        run=run,
        **(extra or {}),
    )


# What TensorFlow raises for a checkpoint that is truncated, corrupt, or holds tensors of other
# shapes or another structure than the model built from the run's config.yaml.
_CHECKPOINT_MISMATCH = (tf.errors.OpError, RuntimeError, IndexError, ValueError, AssertionError)


def _damaged(path, error):
    reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return UserError(
        f"checkpoint {path} is damaged or does not fit the run's config.yaml ({reason}); "
        "restore the run dir from a copy or train it again"
    )


def restore_training_state(model, path, extra=None, key_file=None):
    """Restore everything `training_checkpoint` saved (encrypted: with the key in `key_file`);
    returns the stored fingerprint."""
    checkpoint = training_checkpoint(model, extra)
    try:
        with opened_checkpoint(path, key_file) as readable:
            checkpoint.restore(readable).assert_existing_objects_matched()
    except _CHECKPOINT_MISMATCH as e:
        raise _damaged(path, e) from None
    return checkpoint.run.fingerprint.numpy().decode("utf-8")


def restore_weights(model, path, key_file=None):
    """Load the model weights of a training checkpoint (`checkpointed_weights`: a LoRA run's
    checkpoint holds what trains; encrypted: with the key in `key_file`); every one of them
    must be found."""
    try:
        with opened_checkpoint(path, key_file) as readable:
            status = tf.train.Checkpoint(model=variables_in_order(checkpointed_weights(model))).restore(readable)
            status.expect_partial().assert_existing_objects_matched()
    except _CHECKPOINT_MISMATCH as e:
        raise _damaged(path, e) from None
    return model


def save_weights(model, directory, step):
    """Write the model weights alone as the checkpoint of `step` in `directory` (a `latest/`),
    as `restore_weights` reads them: the one checkpoint of an imported run."""
    checkpoint = tf.train.Checkpoint(model=variables_in_order(model.weights))
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1).save(checkpoint_number=step)


BASE_KEYS = ("run", "checkpoint", "fingerprint")


def base_record(run_dir, checkpoint):
    """What a LoRA run's checkpoints record of the checkpoint they train on: its run dir, its
    path (absolute) and its fingerprint."""
    return {"run": os.path.abspath(run_dir), "checkpoint": os.path.abspath(checkpoint),
            "fingerprint": checkpoint_fingerprint(checkpoint)}


def checkpoint_fingerprint(path):
    """SHA-256 of a checkpoint's index file, which holds a CRC32C checksum of every tensor: it
    changes when any stored value does, and reading it does not read the data."""
    try:
        with tf.io.gfile.GFile(path + ".index", "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except tf.errors.NotFoundError:
        return ""


def read_base(path, key_file=None):
    """The `base_record` stored in the checkpoint `path` (encrypted: opened with the key in
    `key_file`), or None (a run that trains every weight)."""
    names = {key: f"run/base_{key}/.ATTRIBUTES/VARIABLE_VALUE" for key in BASE_KEYS}
    try:
        with opened_checkpoint(path, key_file) as readable:
            # Not `tf.train.load_checkpoint`: it takes a `ram://` prefix for a directory.
            reader = tf.compat.v1.train.NewCheckpointReader(readable)
            if not all(reader.has_tensor(name) for name in names.values()):
                return None
            return {key: reader.get_tensor(name).decode("utf-8") for key, name in names.items()}
    except (tf.errors.OpError, ValueError) as e:
        raise _damaged(path, e) from None


def check_base(base, path):
    """`UserError` unless the base checkpoint that `path` (a LoRA run's checkpoint) was trained on
    is still there, unchanged."""
    fingerprint = checkpoint_fingerprint(base["checkpoint"])
    if not fingerprint:
        raise UserError(
            f"{path} trains adapters on {base['checkpoint']}, which no longer exists; restore it (the base run "
            f"{base['run']} kept newer checkpoints) or train the adapters again"
        )
    if fingerprint != base["fingerprint"]:
        raise UserError(
            f"{path} trains adapters on {base['checkpoint']}, which changed since (fingerprint {fingerprint[:12]}, "
            f"recorded {base['fingerprint'][:12]}); restore that checkpoint or train the adapters again"
        )


def checkpoint_step(path):
    """The step of a checkpoint path (`.../ckpt-120` -> 120): the one parser of checkpoint names
    (`tf.train.CheckpointManager` names them `ckpt-STEP`, the step passed to `save`)."""
    return int(path.rsplit("-", 1)[1])


def checkpoints_in(directory):
    """Paths of the checkpoints a `CheckpointManager` keeps in `directory`, oldest first; only
    those whose index file exists (a checkpoint being written has none yet)."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    paths = [p if os.path.isabs(p) else os.path.join(directory, p) for p in state.all_model_checkpoint_paths]
    return [p for p in paths if tf.io.gfile.exists(p + ".index")]

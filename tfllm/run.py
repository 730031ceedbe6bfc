"""The run directory: where a training run keeps everything it needs to be used again.

    RUN_DIR/config.yaml        the resolved config
    RUN_DIR/corpus/            cleaned train/validation shards and their statistics
    RUN_DIR/tokenizer/         the trained tokenizer
    RUN_DIR/labels.json        classify runs: the label of every class id
    RUN_DIR/backbone.json      fine-tuned runs: where the backbone came from and how it attends
    RUN_DIR/checkpoints/       latest/ (last few) and best/ (best validation metric)
    RUN_DIR/logs/              TensorBoard events
    RUN_DIR/metrics.jsonl      one JSON object per logged step
    RUN_DIR/eval/              reports of `tfllm evaluate`
    RUN_DIR/lineage.json       what the run was made from (`tfllm.lineage`)
    RUN_DIR/manifest.json      a SHA-256 of every file but logs/ and eval/ (`write_manifest`)

`Run` is the one place that knows these names. Every file written into a run directory goes
through it (or through the callbacks it hands its paths to) and through `tfllm.files`.
"""

import contextlib
import datetime
import functools
import json
import os
import shutil

import tensorflow as tf
from tensorflow.core.util import event_pb2

from tfllm import config as config_lib
from tfllm import manifest as manifest_lib
import numpy as np

from tfllm.callbacks.checkpointer import (
    BEST_DIR, LATEST_DIR, check_base, checkpoint_step, checkpoints_in, read_base, restore_weights,
)
from tfllm.data.labeled import LabelMap
from tfllm.encryption import is_encrypted
from tfllm.errors import UserError
from tfllm.files import staging_directory, write_atomically
from tfllm.lora import adapt_as_configured, merge_adapters
from tfllm.precision import for_decoding, global_policy
from tfllm.tasks import TASKS, build_model
from tfllm.tokenizers import load_tokenizer
from tfllm.tokenizers.tokenizer import CONFIG_FILENAME as TOKENIZER_FILE


class Checkpoints:
    """The training checkpoints under a run's `checkpoints/`, by step.

    Args:
        directory: str. The run's `checkpoints/` directory.
    """

    def __init__(self, directory):
        self.directory = directory

    @property
    def latest(self):
        """Path of the newest checkpoint in `latest/`, or None."""
        return tf.train.latest_checkpoint(os.path.join(self.directory, LATEST_DIR))

    @property
    def best(self):
        """Path of the checkpoint with the best validation metric, or None."""
        return tf.train.latest_checkpoint(os.path.join(self.directory, BEST_DIR))

    def preferred(self, prefer_best=True):
        """The best checkpoint, else the latest (or the reverse); None when there is none."""
        first, second = (self.best, self.latest) if prefer_best else (self.latest, self.best)
        return first or second

    def steps(self):
        """The steps of the checkpoints kept in `latest/`, oldest first."""
        return [checkpoint_step(path) for path in checkpoints_in(os.path.join(self.directory, LATEST_DIR))]

    def at(self, step):
        """Path of the checkpoint of `step` in `latest/` (or `best/`), or None."""
        for name in (LATEST_DIR, BEST_DIR):
            for path in checkpoints_in(os.path.join(self.directory, name)):
                if checkpoint_step(path) == step:
                    return path
        return None


class Run:
    """A run directory: its config, tokenizer, labels, checkpoints and the paths of its files.

    `Run(path)` names a directory that may not exist yet (a run about to train);
    `Run.open(path)` checks that it holds a run. What is read is read once, when first asked.
    Encrypted checkpoints (`train.encrypt_key_file`) are read with the key file of the run's
    config, or with `encrypt_key_file` where one is given.

    Example:
    ```python
    run = Run.open("runs/demo")
    run.config.model.task, run.tokenizer.vocabulary_size, run.checkpoints.steps()
    model, checkpoint = run.load_model()
    ```
    """

    def __init__(self, path, encrypt_key_file=None):
        self.path = path
        self._encrypt_key_file = encrypt_key_file
        self.config_path = self._join("config.yaml")
        self.corpus_dir = self._join("corpus")
        self.tokenizer_dir = self._join("tokenizer")
        self.labels_path = self._join("labels.json")
        self.backbone_path = self._join("backbone.json")
        self.checkpoints_dir = self._join("checkpoints")
        self.logs_dir = self._join("logs")
        self.metrics_path = self._join("metrics.jsonl")
        self.eval_dir = self._join("eval")
        self.manifest_path = self._join(manifest_lib.MANIFEST_FILENAME)
        self.checkpoints = Checkpoints(self.checkpoints_dir)

    def _join(self, name):
        return os.path.join(self.path, name)

    @classmethod
    def open(cls, path, encrypt_key_file=None):
        """The run in `path`; `UserError` saying what is missing when it holds none."""
        if os.path.isfile(path):
            raise UserError(f"run dir {path} is a file, not a run dir; pass the --run-dir of a finished `tfllm train`")
        if not os.path.isdir(path):
            raise UserError(f"run dir {path} does not exist; pass the --run-dir of a finished `tfllm train`")
        run = cls(path, encrypt_key_file)
        if not os.path.exists(run.config_path):
            raise UserError(f"{run.config_path} is missing; {path} is not a tfllm run dir")
        return run

    @functools.cached_property
    def config(self):
        return config_lib.load_config(self.config_path)

    @property
    def task(self):
        return TASKS[self.config.model.task]

    @property
    def encrypt_key_file(self):
        """The key file of the run's encrypted checkpoints: the one given, else the config's, or None."""
        if self._encrypt_key_file or not self.has_config:
            return self._encrypt_key_file
        return self.config.train.encrypt_key_file

    @property
    def encrypted(self):
        """Whether the run's checkpoints are encrypted at rest (its config names a key, or its
        preferred checkpoint is sealed): what is made of them must not be written in plaintext."""
        checkpoint = self.checkpoints.preferred()
        return bool(self.encrypt_key_file) or (checkpoint is not None and is_encrypted(checkpoint + ".index"))

    def refuse_plaintext(self, what):
        """`UserError` when the run is `encrypted`: `what` would write its weights in plaintext."""
        if self.encrypted:
            raise UserError(f"{self.path} is encrypted at rest, and {what} would write its weights in plaintext; "
                            "export a SavedModel, which is encrypted with the run's key, instead")

    @property
    def has_config(self):
        return os.path.exists(self.config_path)

    @property
    def has_tokenizer(self):
        return os.path.exists(os.path.join(self.tokenizer_dir, TOKENIZER_FILE))

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer(self.tokenizer_dir)

    @functools.cached_property
    def tokenizer_description(self):
        """The tokenizer's own JSON description (its kind, vocabulary size and files)."""
        with open(os.path.join(self.tokenizer_dir, TOKENIZER_FILE), encoding="utf-8") as file:
            return json.load(file)

    @functools.cached_property
    def labels(self):
        """The `LabelMap` of a run whose task is labeled, else None."""
        return LabelMap.load(self.labels_path) if self.task.labeled else None

    @property
    def backbone_causal(self):
        """Whether the run's backbone attends causally; a task that takes the attention of the
        backbone it started from finds it in backbone.json (causal when it has none)."""
        pretrained = None
        if os.path.exists(self.backbone_path):
            with open(self.backbone_path, encoding="utf-8") as file:
                pretrained = bool(json.load(file)["causal"])
        return self.task.attends_causally(pretrained)

    def build_model(self):
        """The run's task model, untrained."""
        labels = self.labels
        return build_model(self.config, self.tokenizer.vocabulary_size, self.backbone_causal,
                           labels.num_classes if labels else None)

    def load_model(self, prefer_best=True, checkpoint=None):
        """`(model, checkpoint)`: the task model with the weights of the best (else latest)
        checkpoint, or of `checkpoint`; `UserError` when the run has none. A LoRA run's model
        comes with its adapters, over the frozen weights of the base checkpoint it names."""
        checkpoint = checkpoint or self.checkpoints.preferred(prefer_best)
        if checkpoint is None:
            raise UserError(
                f"{self.path} has no checkpoint under checkpoints/; train it first with "
                f"`tfllm train --run-dir {self.path}`"
            )
        model = self.build_model()
        base = read_base(checkpoint, self.encrypt_key_file)
        if base is not None:
            check_base(base, checkpoint)
            start_from(model, self.task, Run.open(base["run"]), base["checkpoint"], self.config.train)
        restore_weights(model, checkpoint, self.encrypt_key_file)
        return model, checkpoint

    def load_servable_model(self, precision="float32"):
        """`(model, checkpoint)`: `load_model`'s model as generation and export use it, its
        adapters merged (serving pays nothing for them) and its weights in `precision`
        (`tfllm.precision.for_decoding`), whatever the global dtype policy: float32 computation
        unless `precision` says otherwise."""
        with global_policy("float32"):
            model, checkpoint = self.load_model()
            merge_adapters(model)
            return for_decoding(model, precision), checkpoint

    @contextlib.contextmanager
    def first_start(self):
        """Inside: the first start of a run. If it ends in a `UserError` (bad input), what it
        wrote is removed again (the run dir too when it made it), so that bad input leaves no
        stray file; a run dir that already held a run is left alone, and so is the run dir of a
        multi-worker job (`TF_CONFIG`), which other workers may be writing."""
        existed = os.path.isdir(self.path)
        if (existed and self.has_config) or os.environ.get("TF_CONFIG"):
            yield
            return
        before = set(os.listdir(self.path)) if existed else set()
        try:
            yield
        except UserError:
            if os.path.isdir(self.path):
                for name in set(os.listdir(self.path)) - before:
                    target = os.path.join(self.path, name)
                    if os.path.isdir(target) and not os.path.islink(target):
                        shutil.rmtree(target, ignore_errors=True)
                    else:
                        os.remove(target)
                if not existed and not os.listdir(self.path):
                    os.rmdir(self.path)
            raise

    # Writes. Each file is written whole (temporary file or staging directory, then a rename).

    def create(self):
        """Make the run directory; `UserError` when it cannot be made or written."""
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run dir {self.path}: {e.strerror}; choose a writable --run-dir")
        if not os.access(self.path, os.W_OK):
            raise UserError(f"run dir {self.path} is not writable; choose a writable --run-dir")
        return self

    def save_config(self, config):
        config_lib.save_config(config, self.config_path)

    def save_labels(self, label_map):
        label_map.save(self.labels_path)

    def save_backbone_info(self, init_from, causal):
        """backbone.json: where the backbone came from and whether it attends causally."""
        write_atomically(self.backbone_path, json.dumps({"init_from": init_from, "causal": bool(causal)}))

    def copy_tokenizer(self, source):
        """Make the tokenizer of the run `source` (a `Run`) this run's, unless it has one."""
        if self.has_tokenizer:
            return
        if not source.has_tokenizer:
            raise UserError(f"{source.path} has no tokenizer/; train that run first")
        with staging_directory(self.tokenizer_dir) as staging:
            shutil.copytree(source.tokenizer_dir, staging, dirs_exist_ok=True)

    def write_eval_report(self, name, report, predictions=None):
        """eval/NAME.json, and eval/NAME.predictions.jsonl when there are `predictions`."""
        os.makedirs(self.eval_dir, exist_ok=True)
        if predictions is not None:
            lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
            write_atomically(os.path.join(self.eval_dir, f"{name}.predictions.jsonl"), lines)
        text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        write_atomically(os.path.join(self.eval_dir, f"{name}.json"), text)

    def write_manifest(self):
        """RUN_DIR/manifest.json: a SHA-256 of every file but logs/ (TensorBoard appends to its
        event files, and a resumed run rewrites them) and eval/ (`tfllm evaluate` adds reports
        to a finished run), written at the end of `tfllm train` and `tfllm import`. A file
        unchanged since the previous manifest (size and time) is not read again, so a resumed
        run rehashes only its new checkpoints. Returns the manifest."""
        latest = self.checkpoints.latest
        description = {"kind": "run", "training_step": checkpoint_step(latest) if latest else None,
                       "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        excluded = [os.path.relpath(path, self.path) for path in (self.logs_dir, self.eval_dir)]
        return manifest_lib.write_manifest(self.path, description, excluded=excluded, reuse=True)

    def drop_logs_after(self, step):
        """Rewrite metrics.jsonl and the TensorBoard event files without what was logged after
        `step` (a run resumed from `step` logs it again)."""
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path, encoding="utf-8") as f:
                lines = [line for line in f if line.strip()]
            kept = [line for line in lines if json.loads(line)["step"] <= step]
            if len(kept) < len(lines):
                write_atomically(self.metrics_path, "".join(kept))
        for root, _, names in os.walk(self.logs_dir):
            for name in names:
                if ".tfevents." in name and not name.endswith(".tmp"):
                    _drop_events_after(os.path.join(root, name), step)


def start_from(model, task, pretrained, checkpoint=None, train_config=None):
    """Copy the pretrained `Run`'s `checkpoint` (default: its best, else latest) into the part of
    `model` (of `task`) that it initializes (`Task.pretrained_part`: the backbone, or a seq2seq
    encoder); with `train.lora_rank` in `train_config`, freeze that part and add its adapters
    (inside the strategy scope that trains them). Returns the checkpoint read."""
    part = task.pretrained_part(model, pretrained.config.model.task)
    checkpoint = load_pretrained(part, pretrained, checkpoint)
    if train_config is not None:
        adapt_as_configured(part, train_config)
    return checkpoint


def load_pretrained(part, pretrained, checkpoint=None):
    """Copy the backbone weights of the `Run` `pretrained` (its `checkpoint`, else its best or
    latest) into `part`, the part of a task model it initializes (`Task.pretrained_part`);
    returns the checkpoint read. A LoRA run gives its weights with the adapters merged."""
    source_model, checkpoint = pretrained.load_model(checkpoint=checkpoint)
    merge_adapters(source_model)
    source, target = source_model.backbone.weights, part.weights
    if len(source) != len(target):
        raise UserError(
            f"train.init_from={pretrained.path}: its backbone has {len(source)} weight tensors, this model "
            f"{len(target)}; use a run with the same model keys"
        )
    for src, dst in zip(source, target):
        if tuple(src.shape) != tuple(dst.shape):
            raise UserError(
                f"train.init_from={pretrained.path}: weight {src.path} has shape {tuple(src.shape)}, this model "
                f"needs {tuple(dst.shape)}; use a run with the same model keys"
            )
        dst.assign(np.asarray(src.numpy(), dtype=dst.dtype))
    return checkpoint


def _drop_events_after(path, step):
    """Rewrite the event file `path` without the events after `step`.

    TensorBoard drops such orphaned events only after a `SessionLog.START` event, which TF2's
    summary writers cannot write; without this a resumed run would show two curves from the
    resume point on. Event files are TFRecord files of `Event` protos.
    """
    records, cut_short = [], False
    try:
        for record in tf.data.TFRecordDataset(path):
            records.append(record.numpy())
    except tf.errors.DataLossError:
        cut_short = True  # the last record was cut by the kill; the ones before it stand
    kept = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    if len(kept) == len(records) and not cut_short:
        return
    # TFRecord framing (lengths and checksums) is written by TensorFlow's writer, into memory,
    # so that the file itself is replaced in one rename.
    in_memory = f"ram://tfllm-events/{os.getpid()}/{os.path.basename(path)}"
    with tf.io.TFRecordWriter(in_memory) as writer:
        for record in kept:
            writer.write(record)
    with tf.io.gfile.GFile(in_memory, "rb") as f:
        content = f.read()
    tf.io.gfile.remove(in_memory)
    write_atomically(path, content)

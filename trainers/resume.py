"""Resuming a run: which checkpoint, which config changes are allowed, and what to drop.

A run resumes exactly: a checkpoint holds the weights, optimizer, RNG states and the callbacks'
state, and the training data is a deterministic function of the step (`training_data`), so a
resumed run skips what the steps before it consumed and continues as if it had never stopped.
"""

import hashlib
import json
import os

import tensorflow as tf
from tensorflow.core.util import event_pb2

from tfllm import config as config_lib
from tfllm.callbacks.checkpointer import BEST_DIR, LATEST_DIR, restore_training_state
from tfllm.errors import UserError


# Keys that may change when a run resumes: how long and how fast it trains from here on, how
# often it validates, logs and saves. Everything else would make the checkpoint another run's.
RESUMABLE_KEYS = frozenset({
    "train.steps", "train.learning_rate", "train.min_learning_rate", "train.warmup_steps",
    "train.clip_norm", "train.eval_every", "train.eval_batches", "train.log_every",
    "train.keep_checkpoints", "train.checkpoint_every", "train.samples", "train.sample_tokens",
    "train.peak_flops", "train.early_stopping_patience", "train.jit_compile",
    "train.steps_per_execution",
})


def flat_config(config):
    return {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}


def find_resume_checkpoint(config, p):
    """The newest checkpoint of the run in `p` to resume, None for a new run, or a `UserError`
    when the run dir holds another run (its saved config differs in a key that cannot change)."""
    if not os.path.exists(p["config"]):
        return None
    run_dir = os.path.dirname(p["config"])
    try:
        previous = config_lib.load_config(p["config"])
    except UserError as e:
        raise UserError(f"{run_dir} holds a config.yaml that is not a tfllm config ({e}); choose a new --run-dir")
    checkpoint = tf.train.latest_checkpoint(os.path.join(p["checkpoints"], LATEST_DIR))
    old, new = flat_config(previous), flat_config(config)
    # Before the first checkpoint only the prepared corpus and tokenizer are reused.
    fixed = (lambda key: key not in RESUMABLE_KEYS) if checkpoint else (
        lambda key: key.startswith("data.") or key == "model.task")
    differing = [key for key in new if fixed(key) and old.get(key) != new[key]]
    if differing:
        changes = ", ".join(f"{key}={old.get(key)!r} -> {new[key]!r}" for key in differing)
        raise UserError(
            f"{run_dir} holds a run with another config ({changes}); keep those keys to resume it "
            "or choose a new --run-dir"
        )
    return checkpoint


def resumed_best_checkpoint(session):
    """The best checkpoint of the run a session resumed (every worker reads the chief's)."""
    if not session.resume_from:
        return None
    checkpoints = os.path.dirname(os.path.dirname(session.resume_from))
    return tf.train.latest_checkpoint(os.path.join(checkpoints, BEST_DIR))


def run_fingerprint(config, p):
    """SHA-256 of the config keys a resume may not change and of the tokenizer's files."""
    digest = hashlib.sha256()
    fixed = {key: value for key, value in flat_config(config).items() if key not in RESUMABLE_KEYS}
    digest.update(json.dumps(fixed, sort_keys=True, default=str).encode("utf-8"))
    for name in sorted(os.listdir(p["tokenizer"])):
        with open(os.path.join(p["tokenizer"], name), "rb") as f:
            digest.update(name.encode("utf-8") + b"\0" + f.read())
    return digest.hexdigest()


def restore_for_resume(session, model, state):
    """Continue the run: restore the training state and drop the metrics logged after it."""
    fingerprint = restore_training_state(model, session.resume_from, extra=state)
    if session.chief and fingerprint != run_fingerprint(session.config, session.paths):
        raise UserError(
            f"{session.resume_from} was saved with another config or tokenizer; choose a new --run-dir"
        )
    if session.chief:
        truncate_metrics(session.paths["metrics"], session.start_step)
        truncate_event_files(session.paths["logs"], session.start_step)


def truncate_metrics(path, step):
    """Rewrite metrics.jsonl without the records after `step` (a resumed run writes them again)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def truncate_event_files(log_dir, step):
    """Rewrite the TensorBoard event files under `log_dir` without the events after `step`.

    TensorBoard drops such orphaned events only after a `SessionLog.START` event, which TF2's
    summary writers cannot write; without this a resumed run would show two curves from the
    resume point on. Event files are TFRecord files of `Event` protos.
    """
    if not os.path.isdir(log_dir):
        return
    for root, _, names in os.walk(log_dir):
        for name in names:
            if ".tfevents." not in name or name.endswith(".tmp"):
                continue
            path = os.path.join(root, name)
            records, cut_short = [], False
            try:
                for record in tf.data.TFRecordDataset(path):
                    records.append(record.numpy())
            except tf.errors.DataLossError:
                cut_short = True  # the last record was cut by the kill; the ones before it stand
            kept = [r for r in records if event_pb2.Event.FromString(r).step <= step]
            if len(kept) == len(records) and not cut_short:
                continue
            with tf.io.TFRecordWriter(path + ".tmp") as writer:
                for record in kept:
                    writer.write(record)
            os.replace(path + ".tmp", path)


def training_data(strategy, pipeline_fn):
    """`step -> distributed dataset`: the training batches from optimizer step `step` on.

    `pipeline_fn(ctx)` builds one input pipeline, a deterministic function of its position, so
    the batches a run gets after a resume at `step` are the ones an uninterrupted run got: each
    optimizer step takes one batch per replica, so a pipeline skips `step x its replicas`.
    """
    def at(step):
        def pipeline(ctx):
            replicas_per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            return pipeline_fn(ctx).skip(step * replicas_per_pipeline)

        return strategy.distribute_datasets_from_function(pipeline)

    return at

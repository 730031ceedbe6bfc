"""Resuming a run: which checkpoint, which config changes are allowed, and what to drop.

A run resumes exactly: a checkpoint holds the weights, optimizer, RNG states and the callbacks'
state, and the training data is a deterministic function of the step
(`tfllm.data.training_data.training_data`), so a resumed run skips what the steps before it
consumed and continues as if it had never stopped.
"""

import dataclasses
import hashlib
import json
import os
import typing

from tfllm.callbacks.checkpointer import checkpoint_step, restore_training_state
from tfllm.errors import UserError
from tfllm.run import Checkpoints

# Keys that may change when a run resumes: how long and how fast it trains from here on, how
# often it validates, logs and saves. Everything else would make the checkpoint another run's.
RESUMABLE_KEYS = frozenset({
    "train.steps", "train.learning_rate", "train.min_learning_rate", "train.warmup_steps",
    "train.clip_norm", "train.eval_every", "train.eval_batches", "train.log_every",
    "train.keep_checkpoints", "train.checkpoint_every", "train.samples", "train.sample_tokens",
    "train.peak_flops", "train.early_stopping_patience", "train.jit_compile",
    "train.steps_per_execution", "train.gradient_checkpointing", "train.encrypt_key_file",
})
# Resumable keys that a resume takes from the saved run unless written again: a run whose
# checkpoints are encrypted stays encrypted, and reads them with the key it names.
FOLLOWS_SAVED_KEYS = frozenset({"train.encrypt_key_file"})
# Keys added after runs began to store fingerprints, with their defaults: left out of a fingerprint
# while at the default, so that a run saved before the key existed still resumes.
KEYS_ADDED_LATER = {"model.qkv_bias": None, "model.rope_scaling": None, "model.pooler": False,
                    "model.num_encoder_layers": 0, "model.num_decoder_layers": 0, "model.source_len": 0,
                    "train.label_smoothing": 0.0, "train.lora_rank": 0, "train.lora_alpha": 16.0,
                    "train.lora_targets": "query,value", "train.lora_dropout": 0.0, "train.quantize": "none"}


@dataclasses.dataclass(frozen=True)
class Resume:
    """Where a training process starts: a new run (no checkpoint, step 0) or a checkpoint.

    Args:
        checkpoint: the checkpoint to continue from, or None for a new run.
        step: the optimizer step it was saved at (0 for a new run): the data skips the batches
            of the steps before it.
        checkpoints: the `Checkpoints` of the run resumed (every worker reads the chief's).
    """

    checkpoint: typing.Optional[str] = None
    step: int = 0
    checkpoints: typing.Optional[Checkpoints] = None

    @property
    def best(self):
        """The best checkpoint of the run resumed, as it is now (early stopping restores its
        weights: the best weights of a resumed run may predate this process); None for a new run."""
        return self.checkpoints.best if self.checkpoints else None

    @staticmethod
    def follow_saved(config, run, written_keys=None):
        """`config` with every key the user did not write (`written_keys`) that a resume may not
        change (or that follows the saved run, `FOLLOWS_SAVED_KEYS`) taken from the run already
        in `run`: a default that changed since the run started does not make its checkpoints
        another run's. None: every key counts as written."""
        if written_keys is None or not run.has_config:
            return config
        saved = _saved_config(run).flat()
        return config.replace({key: value for key, value in saved.items()
                               if key not in written_keys and key in config.flat()
                               and (key not in RESUMABLE_KEYS or key in FOLLOWS_SAVED_KEYS)})

    @classmethod
    def find(cls, config, run):
        """How `config` starts in the run directory `run` (a `Run`); `UserError` when the run
        dir holds another run (its saved config differs in a key that cannot change)."""
        if not run.has_config:
            return cls()
        previous = _saved_config(run)
        checkpoints = Checkpoints(run.checkpoints_dir)
        checkpoint = checkpoints.latest
        old, new = previous.flat(), config.flat()
        # Before the first checkpoint only the prepared corpus and tokenizer are reused.
        fixed = (lambda key: key not in RESUMABLE_KEYS) if checkpoint else (
            lambda key: key.startswith("data.") or key == "model.task")
        differing = [key for key in new if fixed(key) and old.get(key) != new[key]]
        if differing:
            changes = ", ".join(f"{key}={old.get(key)!r} -> {new[key]!r}" for key in differing)
            raise UserError(
                f"{run.path} holds a run with another config ({changes}); keep those keys to resume it "
                "or choose a new --run-dir"
            )
        if checkpoint is None:
            return cls()
        return cls(checkpoint, checkpoint_step(checkpoint), checkpoints)

    def restore(self, model, state, run, config, chief):
        """Continue the run: restore the training state into `model` and the callbacks' `state`;
        the chief checks the fingerprint and drops the metrics logged after the checkpoint."""
        fingerprint = restore_training_state(model, self.checkpoint, extra=state,
                                             key_file=config.train.encrypt_key_file)
        if not chief:
            return
        if fingerprint != run_fingerprint(config, run):
            raise UserError(f"{self.checkpoint} was saved with another config or tokenizer; choose a new --run-dir")
        run.drop_logs_after(self.step)


def _saved_config(run):
    try:
        return run.config
    except UserError as e:
        raise UserError(f"{run.path} holds a config.yaml that is not a tfllm config ({e}); choose a new --run-dir")


def run_fingerprint(config, run):
    """SHA-256 of the config keys a resume may not change and of the tokenizer's files."""
    digest = hashlib.sha256()
    fixed = {key: value for key, value in config.flat().items()
             if key not in RESUMABLE_KEYS and (key not in KEYS_ADDED_LATER or value != KEYS_ADDED_LATER[key])}
    digest.update(json.dumps(fixed, sort_keys=True, default=str).encode("utf-8"))
    for name in sorted(os.listdir(run.tokenizer_dir)):
        with open(os.path.join(run.tokenizer_dir, name), "rb") as f:
            digest.update(name.encode("utf-8") + b"\0" + f.read())
    return digest.hexdigest()

"""A training process's settled state: strategy, precision, seeds, run directory and resume point.

Everything here is decided before any data or model exists, the same way for every task.
"""

import dataclasses
import tempfile
import typing

import keras
import tensorflow as tf

from tfllm import config as config_lib
from tfllm import distribute
from tfllm.callbacks.checkpointer import base_record
from tfllm.errors import UserError
from tfllm.flops import device_peak_flops
from tfllm.precision import resolve_precision
from tfllm.run import Run
from tfllm.trainers import init_from
from tfllm.trainers.resume import Resume


@dataclasses.dataclass
class Session:
    """The resolved settings of one training process.

    Args:
        config: the run's `Config`.
        run: the `Run` this process writes: the run dir for the chief, a private directory for
            the other workers of a multi-worker job (they prepare the same corpus and tokenizer
            there, and never write the chief's run dir).
        strategy: the `tf.distribute.Strategy`.
        chief: whether this process writes checkpoints, logs and metrics.
        precision: the Keras dtype policy in force.
        jit_compile: whether Keras compiles the train step with XLA.
        micro_batch: sequences per replica per micro-batch.
        resume: where training starts (a `Resume`).
        peak_flops: peak FLOP/s of all devices together, for MFU.
        peak_source: where the per-device figure came from.
        base: `base_record` of the pretrained checkpoint the backbone starts from
            (`train.init_from`), or None; a LoRA run resumes on the base it recorded.
    """

    config: config_lib.Config
    run: Run
    strategy: tf.distribute.Strategy
    chief: bool
    precision: str
    jit_compile: bool
    micro_batch: int
    resume: Resume
    peak_flops: float
    peak_source: str
    base: typing.Optional[dict] = None

    @classmethod
    def start(cls, config, run_dir, pretrained=None):
        """Strategy, run dir, precision and seeds: everything settled before data and model;
        `pretrained` is the `Run` of `train.init_from`, or None."""
        t, d = config.train, config.distribute
        strategy = distribute.make_strategy(d.strategy, d.cpu_replicas, d.tpu)
        chief = distribute.is_chief(strategy)
        shared = Run(run_dir)
        if chief:
            shared.create()
        resume = Resume.find(config, shared)
        run = shared if chief else Run(tempfile.mkdtemp(prefix="tfllm-worker-"))
        if t.deterministic:
            tf.config.experimental.enable_op_determinism()
        micro_batch = distribute.split_batch(t.batch_size, strategy.num_replicas_in_sync, t.grad_accum_steps)
        distribute.check_steps_per_execution(strategy, t.steps_per_execution)
        distribute.check_quantize(strategy, t.quantize)
        xla = jit_compile(t.jit_compile, strategy)
        precision = resolve_precision(t.precision)
        keras.mixed_precision.set_global_policy(precision)
        keras.utils.set_random_seed(t.seed)
        if not distribute.same_on_every_worker(strategy, resume.step):
            raise UserError(
                f"the workers found different checkpoints to resume in --run-dir {run_dir} (this one: "
                f"{resume.checkpoint or 'none'}); give every worker the same run dir on a file system they all read"
            )
        if resume.checkpoint:
            print(f"Resuming from {resume.checkpoint} (step {resume.step})")
        # Before any input pipeline exists: its threads would slow a measured CPU peak down,
        # and a low peak makes MFU read high.
        peak, peak_source = peak_flops(strategy, precision, t.peak_flops)
        base = init_from.base_checkpoint(pretrained, resume, config.train.encrypt_key_file)
        base = base_record(pretrained.path, base) if base else None
        return cls(config, run, strategy, chief, precision, xla, micro_batch, resume, peak, peak_source, base)

    def save_config(self):
        if self.chief:
            self.run.save_config(self.config)


def peak_flops(strategy, precision, override):
    """(peak FLOP/s of all devices together, where the per-device figure came from)."""
    dtype = tf.bfloat16 if "bfloat16" in precision else tf.float32
    peak, source = device_peak_flops(override, dtype)
    # CPU replicas of one worker share its cores: one peak per worker, not per replica.
    replicas = strategy.num_replicas_in_sync
    local_devices = strategy.extended.worker_devices
    devices = replicas // len(local_devices) if "CPU" in local_devices[0].upper() else replicas
    return peak * devices, source


def jit_compile(value, strategy):
    """Whether Keras compiles the train step with XLA; `auto` means on one GPU only.

    XLA is slower than plain graphs on this project's CPUs (bench/RESULTS.md), TPUStrategy
    compiles every step with XLA by itself, and Keras 3 cannot compile a step that spans several
    replicas: one XLA cluster cannot reach another device's variables (keras-team/keras#19005).
    """
    replicas = strategy.num_replicas_in_sync
    if value is True and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy):
        raise UserError(
            f"train.jit_compile=true fails with {replicas} replicas: Keras cannot compile one step across "
            "devices (keras-team/keras#19005); use train.jit_compile=auto"
        )
    if value != "auto":
        return bool(value)
    return bool(tf.config.list_physical_devices("GPU")) and replicas == 1

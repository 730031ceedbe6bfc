"""The one place that turns distribution settings into a `tf.distribute` strategy.

Layers and models never mention strategies or devices; the fit programs build the model inside
`strategy.scope()` and hand datasets to `strategy.distribute_datasets_from_function`.
"""

import json
import os

import tensorflow as tf

from tfllm import compat
from tfllm.config import STRATEGIES
from tfllm.errors import UserError


def split_cpu(num_devices):
    """Split the host CPU into `num_devices` logical devices (before TensorFlow initializes them).

    This lets mirrored training run, and be tested, on a machine without accelerators.
    """
    if num_devices < 1:
        raise UserError(f"distribute.cpu_replicas={num_devices} is invalid: use 1 or more")
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == num_devices:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != num_devices:
            raise UserError(
                f"distribute.cpu_replicas={num_devices} cannot be applied: TensorFlow already runs "
                f"with {have} CPU device(s) in this process; start a new process"
            )


def read_tf_config():
    """The parsed `TF_CONFIG` environment variable, checked for what multi-worker training needs."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError(
            "distribute.strategy=multi_worker needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}})'
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos}); fix the variable")
    cluster, task = config.get("cluster") if isinstance(config, dict) else None, None
    if isinstance(config, dict):
        task = config.get("task")
    if not isinstance(cluster, dict) or not cluster.get("worker"):
        raise UserError('TF_CONFIG has no "cluster": {"worker": [...]} list; fix the variable')
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise UserError('TF_CONFIG "task" must name a job of the cluster and an integer index; fix the variable')
    if not 0 <= task["index"] < len(cluster[task["type"]]):
        raise UserError(
            f'TF_CONFIG task index {task["index"]} is outside the {len(cluster[task["type"]])} '
            f'"{task["type"]}" addresses; fix the variable'
        )
    return config


def make_strategy(strategy="auto", cpu_replicas=1, tpu=None):
    """Build the strategy named by `distribute.strategy`.

    Args:
        strategy: one of `STRATEGIES`. `auto` mirrors over all local GPUs when there are
            several, else uses the one device there is.
        cpu_replicas: int. With no GPU, split the CPU into this many devices and mirror over them.
        tpu: str. Address for `TPUClusterResolver` with `strategy="tpu"` ("" or "local" for a
            TPU VM).
    """
    if strategy not in STRATEGIES:
        raise UserError(f"distribute.strategy={strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")
    if cpu_replicas < 1:
        raise UserError(f"distribute.cpu_replicas={cpu_replicas} is invalid: use 1 or more")
    gpus = tf.config.list_physical_devices("GPU")
    if cpu_replicas > 1 and not gpus and strategy in ("auto", "mirrored"):
        split_cpu(cpu_replicas)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if strategy == "auto":
        strategy = "mirrored" if len(gpus) > 1 else "one_device"
    if strategy == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multi_worker":
        read_tf_config()
        if cpu_replicas > 1:
            raise UserError("distribute.cpu_replicas > 1 is only for mirrored training on one machine")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    try:
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        raise UserError(f"cannot reach the TPU at distribute.tpu={tpu!r}: {e}".splitlines()[0])
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True in the one process that writes checkpoints, logs and metrics."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)


def same_on_every_worker(strategy, value):
    """Whether the integer `value` is the same in every worker of a multi-worker strategy (a
    collective every worker must call); always true on one machine.

    Replicas all-reduce `value` and its square: the values are all equal exactly when their
    variance, n * sum(v^2) - sum(v)^2, is zero. (ReduceOp has SUM and MEAN, not MIN/MAX.)
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    v = tf.constant(value, tf.float64)

    @tf.function  # eager collectives are slow and warn about it
    def sums():
        both = strategy.run(lambda: per_replica(tf.stack([v, v * v])))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, both, axis=None)

    total, squares = sums().numpy()
    return strategy.num_replicas_in_sync * squares == total * total


def per_replica(tensor):
    """`tensor` as each replica's own value, inside `strategy.run`: a value captured from outside
    would come back as one tensor, which `strategy.reduce` refuses to reduce."""
    replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tensor + tf.cast(replica_id, tensor.dtype) * 0


def split_batch(global_batch, num_replicas, grad_accum_steps):
    """Per-replica micro-batch size; the global batch must divide evenly."""
    parts = num_replicas * grad_accum_steps
    if global_batch % parts:
        raise UserError(
            f"train.batch_size={global_batch} does not divide into {num_replicas} replica(s) x "
            f"{grad_accum_steps} accumulation step(s) = {parts}; use a multiple of {parts}"
        )
    return global_batch // parts


def check_steps_per_execution(strategy, steps_per_execution):
    """Refuse several steps per execution across replicas: Keras 3.15 fails on it.

    Keras's multi-step loop reads the distributed iterator inside a `tf.cond`, which fails under
    `MirroredStrategy` and `MultiWorkerMirroredStrategy` with 2 or more replicas ("You must feed
    a value for placeholder tensor"; keras-team/keras#19246, pinned by
    tests/trainers/test_distributed_training.py). `TPUStrategy` is not refused: it is untested.
    """
    replicas = strategy.num_replicas_in_sync
    if steps_per_execution > 1 and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy):
        raise UserError(
            f"train.steps_per_execution={steps_per_execution} fails with {replicas} replicas in this Keras "
            "version (keras-team/keras#19246); use train.steps_per_execution=1"
        )


def check_quantize(strategy, quantize):
    """Refuse int8 weights across worker processes: `MultiWorkerMirroredStrategy` broadcasts every
    new variable's initial value from the chief with a collective op that takes no int8
    ("Value for attr 'T' of int8 is not in the list of allowed values", TensorFlow 2.21)."""
    if quantize == "int8" and compat.is_multi_worker(strategy):
        raise UserError(
            "train.quantize=int8 fails with several worker processes: TensorFlow's collective broadcast of "
            "new variables takes no int8; use train.quantize=none (adapters on float weights) or one worker"
        )

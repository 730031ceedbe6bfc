"""Choose the training precision: the one place that knows which hardware runs what fast."""

import contextlib

import keras
import tensorflow as tf

from tfllm.errors import UserError
from tfllm.lora import quantize_int8

# Measured on a 2-core AVX512_BF16 CPU (bench/RESULTS.md): mixed_bfloat16 trains faster than
# float32 there; on GPUs of compute capability >= 8.0 and on TPUs bf16 is native.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo_path="/proc/cpuinfo"):
    """True when the CPU flags name a bfloat16 matmul instruction set."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def gpu_precision(compute_capability):
    """bfloat16 from Ampere (compute capability 8.0) on; float16 with loss scaling before."""
    major, _ = compute_capability
    return "mixed_bfloat16" if major >= 8 else "mixed_float16"


def resolve_precision(name):
    """The Keras dtype policy name for `train.precision`, checked against the hardware."""
    gpus = tf.config.list_physical_devices("GPU")
    tpus = tf.config.list_logical_devices("TPU")
    if name == "auto":
        if tpus:
            return "mixed_bfloat16"
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return gpu_precision(details.get("compute_capability", (0, 0)))
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    if name == "mixed_float16" and not gpus:
        raise UserError(
            "train.precision=mixed_float16 needs a GPU (CPUs and TPUs have no fast float16); "
            "use mixed_bfloat16 or auto"
        )
    return name


# The weights decoding reads. Chosen explicitly (`--precision`), never by the hardware alone:
# each trades some quality for speed or size, measured in bench/RESULTS.md ("Generation").
DECODING_PRECISIONS = ("float32", "bfloat16", "int8")


@contextlib.contextmanager
def global_policy(name):
    """Keras's global dtype policy set to `name` inside the block, the caller's again after it
    (a training run in the same process leaves its own, mixed_bfloat16 on some CPUs)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def for_decoding(model, precision):
    """`model` with its weights in `precision`, for generation and export.

    "float32" is `model` itself; "int8" holds its projections and embeddings in int8, one scale
    per output channel (`tfllm.lora.quantize_int8`, in place); "bfloat16" is a copy of `model`
    built under the "bfloat16" dtype policy (weights and compute in bfloat16, logits float32)
    with every weight rounded from `model`'s. Adapters must be merged first.
    """
    if precision not in DECODING_PRECISIONS:
        raise ValueError(f"precision must be one of {DECODING_PRECISIONS}. Received: precision={precision!r}")
    if precision == "int8":
        return quantize_int8(model)
    if precision == "float32":
        return model
    config = model.get_config()
    config["backbone"] = {**config["backbone"], "config": {**config["backbone"]["config"], "dtype": "bfloat16"}}
    copy = type(model).from_config(config)
    if [tuple(w.shape) for w in copy.weights] != [tuple(w.shape) for w in model.weights]:
        raise ValueError("the bfloat16 copy has other weights than the model: merge its adapters first")
    for target, source in zip(copy.weights, model.weights):
        target.assign(tf.cast(source, target.dtype))
    return copy

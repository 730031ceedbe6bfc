"""Choose the training precision: the one place that knows which hardware runs what fast."""

import tensorflow as tf

from tfllm.errors import UserError

# Measured on a 2-core AVX512_BF16 CPU (bench/RESULTS.md): mixed_bfloat16 trains faster than
# float32 there; on GPUs of compute capability >= 8.0 and on TPUs bf16 is native.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(name):
    """The Keras dtype policy name for `train.precision`, checked against the hardware."""
    gpus = tf.config.list_physical_devices("GPU")
    tpus = tf.config.list_logical_devices("TPU")
    if name == "auto":
        if tpus:
            return "mixed_bfloat16"
        if gpus:
            major, _ = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
            return "mixed_bfloat16" if major >= 8 else "mixed_float16"
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    if name == "mixed_float16" and not gpus:
        raise UserError(
            "train.precision=mixed_float16 needs a GPU (CPUs and TPUs have no fast float16); "
            "use mixed_bfloat16 or auto"
        )
    return name

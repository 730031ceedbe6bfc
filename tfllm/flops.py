"""Model FLOPs per token and the peak FLOP rate of the hardware, for model FLOPs utilization.

MFU = tokens/s x training FLOPs per token / peak FLOP/s. The FLOPs are those the model needs,
not what the hardware did (no recomputation, no padding), as in the PaLM paper (appendix B).
"""

import functools
import os
import time

import numpy as np
import tensorflow as tf

# Dense peak FLOP/s per device at the precision training uses (bf16/fp16 tensor cores; TPU bf16),
# from the vendors' data sheets. Matched as substrings of the device name, longest first, spaces
# ignored. TensorFlow sees each TPU v2/v3 core as a device (two per chip) and each v4/v5 chip as
# one, hence the per-core numbers for v2/v3.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 125e12,
    "V100": 125e12,
    "T4": 65e12,
    "TPU v6e": 918e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
    "TPU v4": 275e12,
    "TPU v3": 61.5e12,
    "TPU v2": 23e12,
}


def training_flops_per_token(num_layers, hidden_dim, intermediate_dim, vocabulary_size, seq_len,
                             key_value_fraction=1.0, mlp_matrices=2):
    """Forward + backward FLOPs per trained token of a decoder-only Transformer.

    6 x N for the weight matmuls (2 forward, 4 backward per weight per token), where N counts
    the attention projections (4 h^2 per layer; the key and value ones shrink to
    `key_value_fraction` = key-value heads / heads under grouped-query attention), the MLP
    (`mlp_matrices` h i per layer: 2, or 3 for SwiGLU's gate) and the output head (v h); plus
    6 x 2 x L x h x T for attention scores and the weighted sum over a causal context of T
    tokens, counted over the full T x T square as PaLM does. Norms, softmax and embedding
    lookups are left out (they are not matmuls).
    """
    attention_projections = (2 + 2 * key_value_fraction) * hidden_dim * hidden_dim
    weights = num_layers * (attention_projections + mlp_matrices * hidden_dim * intermediate_dim)
    weights += vocabulary_size * hidden_dim
    attention = 2 * num_layers * hidden_dim * seq_len
    return 6 * weights + 6 * attention


def seq2seq_training_flops_per_token(num_encoder_layers, num_decoder_layers, hidden_dim, intermediate_dim,
                                     vocabulary_size, source_len, seq_len, key_value_fraction=1.0, mlp_matrices=2):
    """Forward + backward FLOPs per trained target token of an encoder-decoder, counted as
    `training_flops_per_token` counts a decoder's: each target token also pays for
    `source_len / seq_len` source tokens through the encoder (its layers without the output head,
    attention over the whole source) and for the cross-attention keys and values of those source
    tokens (2 h^2 per decoder layer); its own decoder layers add the cross-attention query and
    output projections (2 h^2) and attention over the source.
    """
    decoder = training_flops_per_token(num_decoder_layers, hidden_dim, intermediate_dim, vocabulary_size, seq_len,
                                       key_value_fraction, mlp_matrices)
    decoder += 6 * num_decoder_layers * (2 * hidden_dim * hidden_dim + 2 * hidden_dim * source_len)
    encoder = training_flops_per_token(num_encoder_layers, hidden_dim, intermediate_dim, 0, source_len,
                                       key_value_fraction, mlp_matrices)
    encoder += 6 * num_decoder_layers * 2 * hidden_dim * hidden_dim
    return decoder + encoder * source_len / seq_len


def measure_cpu_flops(size=1024, repeats=20, dtype=tf.float32, clock=time.perf_counter, warmup=3):
    """The FLOP/s of a large matmul on this host's CPU: the practical peak for CPU training.

    The best of `repeats` timings after `warmup` untimed runs: a timing can only come out slower
    than the hardware (another job, a thread pool still starting), never faster, so the fastest
    is the stable estimate. Measure before the input pipeline starts, whose threads would
    compete. With `clock=time.process_time` it is FLOPs per CPU-second of this process (all
    threads' time summed), which stays put when other jobs take cores away.
    """
    a = tf.random.normal((size, size), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    for _ in range(max(1, warmup)):
        matmul(a).numpy()
    best = np.inf
    for _ in range(repeats):
        start = clock()
        matmul(a).numpy()
        best = min(best, clock() - start)
    return 2 * size**3 / best


def lookup_peak_flops(device_name):
    """(peak FLOP/s, table key) of the `PEAK_FLOPS` entry found in `device_name`, or (0.0, None)."""
    squash = lambda text: text.lower().replace(" ", "")  # noqa: E731
    name = squash(device_name)
    for key in sorted(PEAK_FLOPS, key=lambda k: len(squash(k)), reverse=True):
        if squash(key) in name:
            return PEAK_FLOPS[key], key
    return 0.0, None


@functools.lru_cache(maxsize=None)
def _measured_cpu_flops(dtype):
    """`measure_cpu_flops` once per process and dtype: the host's peak does not change between two
    runs in one process (a notebook, a test session), and each measurement costs half a second."""
    return measure_cpu_flops(dtype=dtype)


def device_peak_flops(override=0.0, precision_dtype=tf.float32):
    """Peak FLOP/s of one device: `override` if set, the table for a known accelerator, else measured."""
    if override:
        return float(override), "train.peak_flops"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "")
    elif tf.config.list_logical_devices("TPU"):
        # TensorFlow does not name the TPU generation; TPU VMs set it here (v4-8, v5litepod-16).
        name = "TPU " + os.environ.get("TPU_ACCELERATOR_TYPE", "")
    else:
        return _measured_cpu_flops(precision_dtype), "measured CPU matmul"
    peak, key = lookup_peak_flops(name)
    if key is None:
        return 0.0, f"unknown device {name!r}: set train.peak_flops"
    return peak, key

"""The prompt fill against a forward pass over the same tokens.

Decoding starts with one cached pass over the prompt columns (`tfllm.decoding.fill_cache`),
which writes every layer's keys and values into a cache of the whole buffer's length. This
bench times that pass against the model's plain forward pass (`model(inputs)`, what training
computes before the loss) over the same prompt tokens, both inside one `tf.function` (graph
mode, then XLA), at the sizes of `bench/bench_generate.py` (6 layers, hidden 384) and
GPT-2 124M, with random weights. The cache is `--cache-length` positions long (the generation
buffer: prompt bucket plus new-token bucket).

    python bench/bench_prompt_fill.py

Prints a markdown table.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfllm import decoding  # noqa: E402
from tfllm.models import CausalLM, GPTBackbone  # noqa: E402

SIZES = {
    "6 layers, hidden 384": dict(vocabulary_size=4096, num_layers=6, num_heads=6, hidden_dim=384,
                                 intermediate_dim=1536, max_sequence_length=512),
    "GPT-2 124M": dict(vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072,
                       max_sequence_length=1024),
}


def median_seconds(function, *args, repeats):
    function(*args)  # trace and compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), function(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--cache-length", type=int, default=288)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| model | batch | mode | forward ms | fill ms | fill / forward |\n|---|---:|---|---:|---:|---:|")
    for name, sizes in SIZES.items():
        model = CausalLM(GPTBackbone(**sizes, dropout=0.0))
        for batch in args.batch_sizes:
            ids = tf.constant(np.random.default_rng(0).integers(1, sizes["vocabulary_size"],
                                                                 (batch, args.prompt_tokens)), tf.int32)
            inputs = {"token_ids": ids, "padding_mask": tf.ones_like(ids)}
            for jit in (False, True):
                forward = tf.function(lambda x: model(x, training=False), jit_compile=jit)
                fill = tf.function(lambda x: decoding.fill_cache(model.build_cache, model.call_with_cache, x,
                                                                 args.cache_length), jit_compile=jit)
                forward_s = median_seconds(forward, inputs, repeats=args.repeats)
                fill_s = median_seconds(fill, ids, repeats=args.repeats)
                print(f"| {name} | {batch} | {'XLA' if jit else 'graph'} | {forward_s * 1e3:.1f} | "
                      f"{fill_s * 1e3:.1f} | {fill_s / forward_s:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

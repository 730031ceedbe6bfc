"""Generation speed of tfllm's `Generator` against KerasHub's `GPT2CausalLM.generate`.

Both models get the same sizes (GPT-2 layout: learned positions, MLP 4 x hidden, dropout 0),
random weights, and the same prompts: `--prompt-tokens` random ids per row (tfllm's first id
is its end-of-text id), then exactly `--new-tokens` generated tokens (no stop token, so
neither side stops early). KerasHub gets token ids and a padding mask of length
prompt + new tokens with `preprocessor=None`, the documented way to call `generate` on ids.
tfllm decodes through `Generator.generate_from_ids`, with its default compilation
(`jit_compile="auto"`: XLA only on a GPU); KerasHub with its own default (Keras turns XLA off
on CPU-only machines), or both with XLA on or off (`--jit`).

For each cell (batch size x sampler) both sides first run once, which traces and compiles
(reported apart as "first call"), then alternate A/B/A/B for `--rounds` rounds, so that
machine noise hits both alike. Tokens/s counts generated tokens (batch x new tokens) per
wall-clock second; the CPU-time ratio (process CPU seconds) is reported too because it is
less sensitive to other load on a shared machine.

Run from the repository root:

    python bench/bench_generate.py                     # batch 1 and 8, greedy and top-k
    python bench/bench_generate.py --quick             # 32 new tokens, 2 rounds
    python bench/bench_generate.py --batch-sizes 1 --samplers greedy --jit true

Writes the table to bench/out/generate.md.
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfllm.generator import Generator  # noqa: E402
from tfllm.models.causal_lm import CausalLM  # noqa: E402
from tfllm.models.gpt_backbone import GPTBackbone  # noqa: E402
from tfllm.samplers import GreedySampler, TopKSampler  # noqa: E402
from tfllm.tokenizers import EOS_ID  # noqa: E402
from bench_common import write_atomically  # noqa: E402

SIZES = dict(vocabulary_size=4096, num_layers=6, num_heads=6, hidden_dim=384, context=512)
TOP_K = 50
SEED = 1
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "generate.md")


def build_tfllm():
    backbone = GPTBackbone(
        vocabulary_size=SIZES["vocabulary_size"],
        num_layers=SIZES["num_layers"],
        num_heads=SIZES["num_heads"],
        hidden_dim=SIZES["hidden_dim"],
        intermediate_dim=4 * SIZES["hidden_dim"],
        max_sequence_length=SIZES["context"],
        position="learned",
    )
    return CausalLM(backbone)


def build_kerashub(sampler_name, jit):
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=SIZES["vocabulary_size"],
        num_layers=SIZES["num_layers"],
        num_heads=SIZES["num_heads"],
        hidden_dim=SIZES["hidden_dim"],
        intermediate_dim=4 * SIZES["hidden_dim"],
        dropout=0.0,
        max_sequence_length=SIZES["context"],
    )
    model = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    sampler = "greedy" if sampler_name == "greedy" else keras_hub.samplers.TopKSampler(k=TOP_K, seed=SEED)
    model.compile(sampler=sampler, jit_compile="auto" if jit == "default" else jit == "true")
    return model


def make_sampler(name):
    return GreedySampler() if name == "greedy" else TopKSampler(k=TOP_K, seed=SEED)


def make_prompts(batch_size, prompt_tokens, seed=0):
    rng = np.random.default_rng(seed)
    prompts = rng.integers(4, SIZES["vocabulary_size"], size=(batch_size, prompt_tokens), dtype=np.int32)
    prompts[:, 0] = EOS_ID
    return prompts


def timed(fn):
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_cell(batch_size, sampler_name, jit, args):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    prompts = make_prompts(batch_size, args.prompt_tokens)
    length = args.prompt_tokens + args.new_tokens
    token_ids = np.zeros((batch_size, length), np.int32)
    token_ids[:, : args.prompt_tokens] = prompts
    padding_mask = token_ids != 0
    kerashub = build_kerashub(sampler_name, jit)
    generator = Generator(build_tfllm(), tokenizer=None, max_length=SIZES["context"],
                          jit_compile="auto" if jit == "default" else jit == "true")
    sampler = make_sampler(sampler_name)
    calls = {
        "tfllm": lambda: generator.generate_from_ids(prompts.tolist(), args.new_tokens, sampler, stop_token_ids=()),
        "kerashub": lambda: kerashub.generate({"token_ids": token_ids, "padding_mask": padding_mask},
                                              stop_token_ids=None),
    }
    first = {key: timed(call)[0] for key, call in calls.items()}
    rounds = {key: [] for key in calls}
    for _ in range(args.rounds):
        for key, call in calls.items():
            rounds[key].append(timed(call))
    tokens = batch_size * args.new_tokens
    wall = {key: statistics.median(w for w, _ in timings) for key, timings in rounds.items()}
    cpu = {key: statistics.median(c for _, c in timings) for key, timings in rounds.items()}
    return {
        "batch": batch_size,
        "sampler": sampler_name if sampler_name == "greedy" else f"top-k {TOP_K}",
        "jit": f"{generator.uses_xla} / {kerashub.jit_compile}",
        "tfllm": tokens / wall["tfllm"],
        "kerashub": tokens / wall["kerashub"],
        # The ratios of the medians: tfllm's tok/s over KerasHub's, the columns beside them.
        "ratio": wall["kerashub"] / wall["tfllm"],
        "cpu_ratio": cpu["kerashub"] / cpu["tfllm"],
        "first_tfllm": first["tfllm"],
        "first_kerashub": first["kerashub"],
    }


def format_table(rows, args):
    lines = [
        f"{SIZES['num_layers']} layers, hidden {SIZES['hidden_dim']}, {SIZES['num_heads']} heads, context "
        f"{SIZES['context']}, vocabulary {SIZES['vocabulary_size']}, float32; prompt {args.prompt_tokens} tokens, "
        f"{args.new_tokens} new tokens; median of {args.rounds} alternating rounds; "
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, TF {tf.__version__}, "
        f"KerasHub {keras_hub.__version__}.",
        "",
        "| batch | sampler | XLA (tfllm / KerasHub) | tfllm tok/s | KerasHub tok/s | ratio | ratio (CPU time) "
        "| first call tfllm | first call KerasHub |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch']} | {row['sampler']} | {row['jit']} | {row['tfllm']:.1f} | {row['kerashub']:.1f} | "
            f"{row['ratio']:.2f}x | {row['cpu_ratio']:.2f}x | {row['first_tfllm']:.1f} s | "
            f"{row['first_kerashub']:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 new tokens and 2 rounds")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--samplers", nargs="+", default=["greedy", "top-k"], choices=["greedy", "top-k"])
    parser.add_argument("--jit", nargs="+", default=["default"], choices=["default", "true", "false"],
                        help="XLA for both sides; 'default' keeps each library's own choice")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=OUT_PATH, help="markdown output path")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.rounds = 32, 2
    return args


def main():
    args = parse_args()
    rows = []
    for jit in args.jit:
        for batch_size in args.batch_sizes:
            for sampler_name in args.samplers:
                rows.append(run_cell(batch_size, sampler_name, jit, args))
                print(format_table(rows[-1:], args).splitlines()[-1], flush=True)
    table = format_table(rows, args)
    write_atomically(args.out, table)
    print(table)


if __name__ == "__main__":
    main()

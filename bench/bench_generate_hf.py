"""Generation speed at GPT-2 124M shapes: tfllm's `Generator` against Hugging Face `transformers`.

One GPT-2 124M checkpoint (12 layers, 12 heads, hidden 768, context 1024, 50257 ids, random
weights from `GPT2LMHeadModel(GPT2Config())`, seed 0) is saved with `save_pretrained` and
loaded by both sides: `transformers` (PyTorch, float32, `model.generate`, greedy, KV cache on)
and tfllm (`tfllm.huggingface.load_causal_lm`, then `Generator.generate_from_ids`). Every row
has the same `--prompt-tokens` random ids and generates exactly `--new-tokens` tokens (no stop
token: `min_new_tokens` on the Hugging Face side, no stop ids on tfllm's). The greedy tokens of
both sides are compared before timing (the first `--check-tokens` of every row must agree).

tfllm runs in each decoding precision (`tfllm.precision.for_decoding`): float32 in graph mode
and with XLA (its default on a CPU), bfloat16 and int8 weights with XLA. For each batch size
every side runs once (tracing, compiling; reported as "first call"), then `--rounds` more times;
tokens/s is the median. `transformers` runs in a process of its own, before tfllm's sides (in
one process, TensorFlow's idle thread pools slowed PyTorch 5x); the tfllm sides alternate. Both
use every core (PyTorch's default threads; TensorFlow's default pools).

    python bench/bench_generate_hf.py                      # batch 1 and 8
    python bench/bench_generate_hf.py --batch-sizes 1 --rounds 1

Writes the table to bench/out/generate_hf.md.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import transformers  # noqa: E402

from bench.bench_common import write_atomically  # noqa: E402
from tfllm.generator import Generator  # noqa: E402
from tfllm.huggingface import load_causal_lm  # noqa: E402
from tfllm.precision import for_decoding  # noqa: E402
from tfllm.samplers import GreedySampler  # noqa: E402

HF = "transformers float32 (PyTorch, own process)"
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "generate_hf.md")
# (label, precision, jit_compile)
TFLLM_SIDES = (("tfllm float32, graph", "float32", False), ("tfllm float32, XLA (default)", "float32", "auto"),
               ("tfllm bfloat16, XLA", "bfloat16", "auto"), ("tfllm int8, XLA", "int8", "auto"))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def prompts_of(batch, prompt_tokens):
    return np.random.default_rng(batch).integers(0, 50257, size=(batch, prompt_tokens)).tolist()


def time_transformers(directory, args):
    """In this process (started by `main` with `--transformers-only`): load the checkpoint into
    PyTorch and print one JSON line per batch size: first-call seconds, round seconds, tokens."""
    import torch

    model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    for batch in args.batch_sizes:
        prompts = torch.tensor(prompts_of(batch, args.prompt_tokens))

        def call():
            with torch.no_grad():
                out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=args.new_tokens,
                                     min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
            return out[:, args.prompt_tokens:].tolist()

        first, tokens = timed(call)
        rounds = [timed(call)[0] for _ in range(args.rounds)]
        print(json.dumps({"batch": batch, "first": first, "rounds": rounds, "tokens": tokens,
                          "torch": torch.__version__}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--check-tokens", type=int, default=16)
    parser.add_argument("--out", default=OUT_PATH)
    parser.add_argument("--transformers-only", metavar="CHECKPOINT_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.transformers_only:
        return time_transformers(args.transformers_only, args)

    import torch

    torch.manual_seed(0)
    directory = tempfile.mkdtemp(prefix="gpt2-124m-")
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(directory)
    command = [sys.executable, __file__, "--transformers-only", directory, "--batch-sizes",
               *map(str, args.batch_sizes), "--prompt-tokens", str(args.prompt_tokens), "--new-tokens",
               str(args.new_tokens), "--rounds", str(args.rounds)]
    lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
    reference = {record["batch"]: record for record in map(json.loads, lines)}
    generators = {}
    for label, precision, jit in TFLLM_SIDES:
        model = for_decoding(load_causal_lm(directory), precision)
        generators[label] = Generator(model, tokenizer=None, max_length=1024, jit_compile=jit)

    rows = []
    for batch in args.batch_sizes:
        prompts = prompts_of(batch, args.prompt_tokens)
        calls = {label: (lambda g: lambda: g.generate_from_ids(prompts, args.new_tokens, GreedySampler(),
                                                               stop_token_ids=()))(generator)
                 for label, generator in generators.items()}
        first, outputs = {}, {}
        for label, call in calls.items():
            first[label], outputs[label] = timed(call)
        times = {label: [] for label in calls}
        for _ in range(args.rounds):
            for label, call in calls.items():
                times[label].append(timed(call)[0])
        hf = reference[batch]
        want = [row[: args.check_tokens] for row in hf["tokens"]]
        first[HF], times[HF], outputs[HF] = hf["first"], hf["rounds"], hf["tokens"]
        hf_rate = batch * args.new_tokens / statistics.median(hf["rounds"])
        for label in [HF, *calls]:
            rate = batch * args.new_tokens / statistics.median(times[label])
            agree = [row[: args.check_tokens] for row in outputs[label]] == want
            rows.append(f"| {batch} | {label} | {rate:.1f} | {rate / hf_rate:.2f}x | {first[label]:.1f} s | "
                        f"{'yes' if agree else 'no'} |")
            print(rows[-1], flush=True)

    header = ("| batch | side | tok/s | / transformers | first call | first "
              f"{args.check_tokens} tokens equal transformers' |\n|---:|---|---:|---:|---:|---|")
    note = (f"GPT-2 124M shapes, random weights (one checkpoint for both sides); prompt {args.prompt_tokens} "
            f"tokens, {args.new_tokens} new tokens, greedy; median of {args.rounds} alternating rounds; "
            f"{os.cpu_count()} CPU cores, {platform.machine()}, TF {tf.__version__}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}.")
    table = "\n".join([header, *rows])
    write_atomically(args.out, f"{note}\n\n{table}\n")
    print(note)


if __name__ == "__main__":
    main()

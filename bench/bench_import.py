"""Importing a GPT-2 124M-shaped Hugging Face checkpoint: time, peak memory, generation speed.

A `transformers.GPT2LMHeadModel` with GPT-2 small's sizes (12 layers, 12 heads, hidden 768,
context 1024, 50257 ids) and random weights is saved with `save_pretrained` (float32
safetensors). A fresh process then imports it with `tfllm.huggingface.load_causal_lm` and
reports the wall time and the rise of its peak resident memory (`ru_maxrss`) over what it
held before the import, against the model's float32 size. Then greedy generation of 128 new
tokens after a 32-token prompt, batch 1 and 8, tfllm's `Generator` (its default compilation)
against `transformers`' `generate(do_sample=False)` on the same CPU, tokens checked equal,
alternating rounds, medians.

    python bench/bench_import.py             # writes bench/out/import.md
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench_common import write_atomically  # noqa: E402

OUT_PATH = os.path.join(REPO, "bench", "out", "import.md")
PROMPT, NEW = 32, 128

# The import, measured in a process of its own so that nothing else has touched its memory.
IMPORT = """
import json, resource, sys, time
import tensorflow as tf
from tfllm.huggingface import load_causal_lm
def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
before = rss_mib()
start = time.perf_counter()
lm = load_causal_lm(sys.argv[1])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
size = sum(w.numpy().nbytes for w in lm.weights) / 2**20
print(json.dumps({"seconds": seconds, "before_mib": before, "peak_mib": peak, "model_mib": size}))
"""


def save_checkpoint(directory):
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(directory)


def measure_import(directory):
    out = subprocess.run([sys.executable, "-c", IMPORT, directory], cwd=REPO, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def generation_rows(directory, rounds):
    import numpy as np
    import torch
    import transformers

    from tfllm.generator import Generator
    from tfllm.huggingface import load_causal_lm
    from tfllm.samplers import GreedySampler

    torch.set_num_threads(os.cpu_count())
    reference = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    generator = Generator(load_causal_lm(directory), tokenizer=None, max_length=1024)
    rows = []
    for batch in (1, 8):
        prompts = np.random.default_rng(batch).integers(0, 50257, (batch, PROMPT))

        def ours():
            return generator.generate_from_ids(prompts.tolist(), NEW, GreedySampler(), stop_token_ids=())

        def theirs():
            with torch.no_grad():
                out = reference.generate(torch.tensor(prompts), attention_mask=torch.ones(prompts.shape),
                                         do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                                         eos_token_id=None, pad_token_id=0)
            return out[:, PROMPT:].tolist()

        first = {"tfllm": timed(ours), "transformers": timed(theirs)}
        same = first["tfllm"][1] == first["transformers"][1]
        times = {"tfllm": [], "transformers": []}
        for _ in range(rounds):
            times["tfllm"].append(timed(ours)[0])
            times["transformers"].append(timed(theirs)[0])
        median = {key: statistics.median(values) for key, values in times.items()}
        rows.append({"batch": batch, "same": same, "first_tfllm": first["tfllm"][0],
                     "tfllm": batch * NEW / median["tfllm"], "transformers": batch * NEW / median["transformers"]})
        print(rows[-1], flush=True)
    return rows


def format_report(imported, rows, rounds):
    lines = [
        "| checkpoint | import wall | memory before | peak | rise | float32 model | rise / model |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| GPT-2 124M shape, float32 safetensors | {imported['seconds']:.1f} s | {imported['before_mib']:.0f} MiB "
        f"| {imported['peak_mib']:.0f} MiB | {imported['peak_mib'] - imported['before_mib']:.0f} MiB "
        f"| {imported['model_mib']:.0f} MiB | {(imported['peak_mib'] - imported['before_mib']) / imported['model_mib']:.2f}x |",
        "",
        f"Greedy, {PROMPT}-token prompts, {NEW} new tokens, median of {rounds} alternating rounds:",
        "",
        "| batch | same tokens | tfllm tok/s | transformers tok/s | ratio | tfllm first call |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['same']} | {r['tfllm']:.1f} | {r['transformers']:.1f} | "
                     f"{r['tfllm'] / r['transformers']:.2f}x | {r['first_tfllm']:.1f} s |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=OUT_PATH)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(directory)
        imported = measure_import(directory)
        print(imported, flush=True)
        rows = generation_rows(directory, args.rounds)
    report = format_report(imported, rows, args.rounds)
    print(report)
    write_atomically(args.out, report)


if __name__ == "__main__":
    main()

"""Serving benchmark: `tfllm serve` under load, and the exported `generate` against in-process generation.

Run from the repository root:

    python bench/bench_serve.py                         # trains a throwaway gpt-tiny run first
    python bench/bench_serve.py --run-dir runs/demo     # any trained run
    python bench/bench_serve.py --quick                 # fewer rounds and requests

1. Exported vs in-process: tokens/s of the SavedModel's `generate` signature (loaded with
   `tf.saved_model.load`; its decoding loop is compiled with XLA) against
   `tfllm.generator.Generator.generate` as `tfllm generate` runs it (XLA on a GPU only) and with
   `jit_compile=True`, all text in, text out, greedy, on the same prompts (the texts are checked
   equal, so all do the same work). Each cell warms every path up (tracing, XLA compilation),
   then times them in alternating rounds; the median round counts.
2. Served: `tfllm serve` in a subprocess on 127.0.0.1, driven by 1 and by 8 concurrent clients
   (threads in this process, on the same machine) sending one-prompt greedy `generate` requests;
   requests/s over the whole run, p50/p99 latency per request, and generated tokens/s.

Writes the tables to bench/out/serve.md.
"""

import argparse
import concurrent.futures
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runnable from a checkout without installing the package.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfllm import cli  # noqa: E402
from tfllm.generator import Generator  # noqa: E402
from tfllm.run import Run  # noqa: E402
from tfllm.samplers import GreedySampler  # noqa: E402
from bench_common import write_atomically  # noqa: E402

OUT_DIR = os.path.join(REPO_ROOT, "bench", "out")
# A throwaway run at gpt-tiny sizes: throughput does not depend on how well it is trained.
TRAIN_OVERRIDES = ["train.steps=20", "train.eval_every=20", "train.eval_batches=2", "train.samples=1",
                   "train.sample_tokens=4", "train.warmup_steps=5"]
PROMPTS = [
    "The with statement", "def main(", "Exceptions are raised", "import os\n", "A list comprehension",
    "class Queue:", "The standard library", "for line in open(",
]
GREEDY = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}


def prepare(run_dir):
    """A trained run (trained here when `run_dir` is None) and its export; returns both paths."""
    if run_dir is None:
        run_dir = os.path.join(OUT_DIR, "serve_run")
        if Run(run_dir).checkpoints.preferred() is None:
            assert cli.main(["train", "--run-dir", run_dir, *TRAIN_OVERRIDES]) == 0
    export_dir = os.path.join(OUT_DIR, "serve_export")
    assert cli.main(["export", "--run-dir", run_dir, "--out", export_dir, "--version", "1", "--force"]) == 0
    return run_dir, export_dir


def exported_vs_in_process(run_dir, export_dir, batch_sizes, max_new_tokens, rounds):
    run = Run.open(run_dir)
    config, tokenizer = run.config, run.tokenizer
    model, _ = run.load_model()
    generators = {
        "in_process": Generator(model, tokenizer, max_length=config.max_seq_len),
        "in_process_xla": Generator(model, tokenizer, max_length=config.max_seq_len, jit_compile=True),
    }
    generate = tf.saved_model.load(os.path.join(export_dir, "1")).signatures["generate"]
    rows = []
    for batch in batch_sizes:
        prompts = (PROMPTS * batch)[:batch]
        inputs = {"prompts": tf.constant(prompts), "max_new_tokens": tf.constant(max_new_tokens),
                  "temperature": tf.constant(0.0), "top_k": tf.constant(0), "top_p": tf.constant(1.0),
                  "seed": tf.constant(0)}
        sampler = GreedySampler()
        paths = {"exported": lambda: generate(**inputs)}
        for name, generator in generators.items():
            paths[name] = lambda generator=generator: generator.generate(prompts, max_new_tokens, sampler)
        exported = generate(**inputs)
        texts = [t.decode("utf-8") for t in exported["text"].numpy()]
        for name in generators:
            assert texts == paths[name](), f"the exported and {name} completions differ"
        tokens = int(exported["num_tokens"].numpy().sum())
        for run in paths.values():  # warm-up: tracing and graph optimization
            run()
        seconds = {name: [] for name in paths}
        for _ in range(rounds):
            for name, run in paths.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
        rate = {name: tokens / statistics.median(values) for name, values in seconds.items()}
        rows.append({"batch": batch, "max_new_tokens": max_new_tokens, "tokens": tokens, **rate})
        print(f"batch {batch}: {rows[-1]}", flush=True)
    return rows


def start_server(export_dir, log_path):
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tfllm.cli", "serve", "--model", export_dir, "--port", "0", "--name", "bench"],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT,
    )
    line = process.stdout.readline()
    if not line.startswith("Serving"):
        process.kill()
        raise RuntimeError(f"tfllm serve did not start; see {log_path}")
    return process, line.split(" at ")[1].split(" ")[0] + ":predict"


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - start, sum(answer["outputs"]["num_tokens"])


def served(export_dir, concurrencies, requests, max_new_tokens):
    process, url = start_server(export_dir, os.path.join(OUT_DIR, "serve.log"))
    bodies = [{"signature_name": "generate", "inputs": {"prompts": [prompt], "max_new_tokens": max_new_tokens,
                                                        **GREEDY}} for prompt in PROMPTS]
    rows = []
    try:
        for body in bodies:  # warm-up
            post(url, body)
        for clients in concurrencies:
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
                results = list(pool.map(lambda i: post(url, bodies[i % len(bodies)]), range(requests)))
            wall = time.perf_counter() - start
            latencies = np.array([seconds for seconds, _ in results]) * 1000
            rows.append({"clients": clients, "requests": requests, "requests_per_s": requests / wall,
                         "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
                         "tokens_per_s": sum(tokens for _, tokens in results) / wall})
            print(f"{clients} clients: {rows[-1]}", flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return rows


def format_tables(comparison, serving, max_new_tokens):
    lines = [
        f"Exported `generate` vs in-process `Generator.generate` (greedy, {max_new_tokens} new tokens, "
        "text in and out):",
        "",
        "| batch | tokens | exported tok/s | in-process tok/s (default) | in-process tok/s (XLA) | "
        "exported / in-process XLA |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in comparison:
        lines.append(f"| {row['batch']} | {row['tokens']} | {row['exported']:.0f} | {row['in_process']:.0f} | "
                     f"{row['in_process_xla']:.0f} | {row['exported'] / row['in_process_xla']:.2f}x |")
    lines += [
        "",
        f"`tfllm serve`, one-prompt greedy `generate` requests of {max_new_tokens} new tokens:",
        "",
        "| clients | requests | requests/s | p50 ms | p99 ms | generated tok/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in serving:
        lines.append(f"| {row['clients']} | {row['requests']} | {row['requests_per_s']:.1f} | {row['p50_ms']:.0f} | "
                     f"{row['p99_ms']:.0f} | {row['tokens_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="a trained run (default: train a throwaway one)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", default=os.path.join(OUT_DIR, "serve.md"), help="markdown output path")
    return parser.parse_args()


def main():
    args = parse_args()
    run_dir, export_dir = prepare(args.run_dir)
    rounds, requests = (3, 24) if args.quick else (7, 80)
    comparison = exported_vs_in_process(run_dir, export_dir, (1, 8), args.max_new_tokens, rounds)
    serving = served(export_dir, (1, 8), requests, args.max_new_tokens)
    tables = format_tables(comparison, serving, args.max_new_tokens)
    print(tables)
    write_atomically(args.out, tables)


if __name__ == "__main__":
    main()

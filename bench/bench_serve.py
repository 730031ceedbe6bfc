"""Serving benchmark: `tfllm serve` under load, and the exported `generate` against in-process generation.

Run from the repository root:

    python bench/bench_serve.py                         # trains a throwaway gpt-tiny run first
    python bench/bench_serve.py --run-dir runs/demo     # any trained run
    python bench/bench_serve.py --quick                 # fewer rounds and requests
    python bench/bench_serve.py --served-only           # the `tfllm serve` table alone
    python bench/bench_serve.py --batch-timeout-ms 10   # the batching server's wait
    python bench/bench_serve.py --num-batch-threads 1   # merged calls one at a time

1. Exported vs in-process: tokens/s of the SavedModel's `generate` signature (loaded with
   `tf.saved_model.load`; its decoding loop is compiled with XLA) against
   `tfllm.generator.Generator.generate` as `tfllm generate` runs it (XLA on a GPU only) and with
   `jit_compile=True`, all text in, text out, greedy, on the same prompts (the texts are checked
   equal, so all do the same work). Each cell warms every path up (tracing, XLA compilation),
   then times them in alternating rounds; the median round counts.
2. Served: `tfllm serve` in a subprocess on 127.0.0.1, with request batching (the default:
   concurrent requests share a call) and with `--no-batching`, driven by 1 and by 8 concurrent
   clients (threads in this process, on the same machine) sending one-prompt greedy `generate`
   requests; requests/s over the whole run, p50/p99 latency per request, generated tokens/s,
   and requests per signature call (from the server's stats path). Every answer is checked
   equal to the answer the `--no-batching` server gave the same request sent alone. Before
   timing, each server answers requests of 1, 2, 4 and 8 copies of each prompt and then 2, 4
   and 8 concurrent clients for a few rounds, so that XLA has compiled every batch size and
   buffer shape the timed runs meet.

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


def start_server(export_dir, log_path, flags=()):
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tfllm.cli", "serve", "--model", export_dir, "--port", "0", "--name", "bench", *flags],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT,
    )
    line = process.stdout.readline()
    if not line.startswith("Serving"):
        process.kill()
        raise RuntimeError(f"tfllm serve did not start; see {log_path}")
    return process, line.split(" at ")[1].split(" ")[0]


def post(url, body):
    """(seconds, outputs) of one `:predict` request."""
    request = urllib.request.Request(url + ":predict", data=json.dumps(body).encode(), method="POST")
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - start, answer["outputs"]


def stats(url):
    with urllib.request.urlopen(url + "/stats", timeout=60) as response:
        return json.loads(response.read())


def load(url, bodies, clients, requests):
    """(wall seconds, [(body index, seconds, outputs)]) of `requests` requests from `clients` threads."""
    def one(i):
        return (i % len(bodies), *post(url, bodies[i % len(bodies)]))

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, range(requests)))
    return time.perf_counter() - start, results


def served(export_dir, concurrencies, requests, all_max_new_tokens, flags, expected):
    """Rows of the served table for one server started with `flags`; fills `expected`
    (max_new_tokens, body index) with the answers to requests sent one at a time where it is
    empty, and checks every answer against it."""
    batching = "--no-batching" not in flags
    name = "batching" if batching else "no_batching"
    process, url = start_server(export_dir, os.path.join(OUT_DIR, f"serve_{name}.log"), flags)
    rows = []
    try:
        for max_new_tokens in all_max_new_tokens:
            bodies = [{"signature_name": "generate", "inputs": {"prompts": [prompt], "max_new_tokens": max_new_tokens,
                                                                **GREEDY}} for prompt in PROMPTS]
            for index, body in enumerate(bodies):  # one at a time: each request alone
                alone = post(url, body)[1]
                assert expected.setdefault((max_new_tokens, index), alone) == alone, "the two servers differ"
            # Warm-up: every (batch size, buffer shape) the runs below can meet. A merged call's
            # buffer is sized by its longest prompt, so a call of `size` copies of each prompt
            # meets every shape of that size, however the clients' requests are grouped.
            for size in (1, 2, 4, 8):
                for prompt in PROMPTS:
                    post(url, {**bodies[0], "inputs": {**bodies[0]["inputs"], "prompts": [prompt] * size}})
            for clients in (2, 4, 8):
                load(url, bodies, clients, 3 * clients)
            for clients in concurrencies:
                before = stats(url)
                wall, results = load(url, bodies, clients, requests)
                after = stats(url)
                wrong = sum(outputs != expected[(max_new_tokens, index)] for index, _, outputs in results)
                assert wrong == 0, f"{wrong} of {requests} answers differ from the same requests sent alone"
                latencies = np.array([seconds for _, seconds, _ in results]) * 1000
                calls = after["batches"] - before["batches"]
                rows.append({"max_new_tokens": max_new_tokens, "batching": batching, "clients": clients,
                             "requests": requests, "requests_per_s": requests / wall,
                             "p50_ms": float(np.percentile(latencies, 50)),
                             "p99_ms": float(np.percentile(latencies, 99)),
                             "tokens_per_s": sum(sum(outputs["num_tokens"]) for _, _, outputs in results) / wall,
                             "requests_per_call": (after["requests"] - before["requests"]) / calls})
                print(f"{name}, {max_new_tokens} new tokens, {clients} clients: {rows[-1]}", flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return rows


def format_comparison(comparison, max_new_tokens):
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
    return "\n".join(lines) + "\n"


def format_serving(serving, batch_timeout_ms, num_batch_threads):
    threads = "default" if num_batch_threads is None else num_batch_threads
    lines = [
        f"`tfllm serve`, one-prompt greedy `generate` requests (batching on: `--batch-timeout-ms {batch_timeout_ms}`, "
        f"`--max-batch-size 32`, `--num-batch-threads` {threads}; off: `--no-batching`):",
        "",
        "| new tokens | batching | clients | requests | requests/s | p50 ms | p99 ms | generated tok/s | "
        "requests per call | requests/s vs 1 client |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    one_client = {(row["max_new_tokens"], row["batching"]): row["requests_per_s"] for row in serving
                  if row["clients"] == 1}
    for row in serving:
        ratio = row["requests_per_s"] / one_client.get((row["max_new_tokens"], row["batching"]), float("nan"))
        lines.append(f"| {row['max_new_tokens']} | {'on' if row['batching'] else 'off'} | {row['clients']} | "
                     f"{row['requests']} | {row['requests_per_s']:.1f} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
                     f"{row['tokens_per_s']:.0f} | {row['requests_per_call']:.2f} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="a trained run (default: train a throwaway one)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[32, 96],
                        help="new tokens per request; the in-process comparison uses the first")
    parser.add_argument("--served-only", action="store_true", help="only the `tfllm serve` table")
    parser.add_argument("--batch-timeout-ms", type=int, default=cli.DEFAULT_BATCH_TIMEOUT_MS,
                        help="`tfllm serve --batch-timeout-ms` of the batching server")
    parser.add_argument("--num-batch-threads", type=int, default=None,
                        help="`tfllm serve --num-batch-threads` of the batching server (default: the server's)")
    parser.add_argument("--out", default=os.path.join(OUT_DIR, "serve.md"), help="markdown output path")
    return parser.parse_args()


def main():
    args = parse_args()
    run_dir, export_dir = prepare(args.run_dir)
    rounds, requests = (3, 24) if args.quick else (7, 80)
    tables = ""
    if not args.served_only:
        comparison = exported_vs_in_process(run_dir, export_dir, (1, 8), args.max_new_tokens[0], rounds)
        tables = format_comparison(comparison, args.max_new_tokens[0]) + "\n"
    expected = {}
    threads = [] if args.num_batch_threads is None else ["--num-batch-threads", str(args.num_batch_threads)]
    servers = (["--no-batching"], ["--batch-timeout-ms", str(args.batch_timeout_ms), *threads])
    serving = [row for flags in servers
               for row in served(export_dir, (1, 8), requests, args.max_new_tokens, flags, expected)]
    serving.sort(key=lambda row: (row["max_new_tokens"], not row["batching"]))
    tables += format_serving(serving, args.batch_timeout_ms, args.num_batch_threads)
    print(tables)
    write_atomically(args.out, tables)


if __name__ == "__main__":
    main()

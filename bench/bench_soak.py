"""Server soak: `tfllm serve` under 2,000 mixed valid and invalid requests from 8 clients.

Run from the repository root:

    python bench/bench_soak.py                          # trains and exports a tiny char run first
    python bench/bench_soak.py --run-dir runs/demo      # any trained run
    python bench/bench_soak.py --requests 400           # a shorter soak

`tfllm serve` runs in a subprocess on 127.0.0.1 so that its memory can be read from outside
(VmRSS in /proc/PID/status). Client threads send requests from a fixed rotation: about 27% are
invalid (malformed, mistyped or oversized bodies, missing keys, unknown signatures, models,
versions and paths, wrong HTTP methods, limits and graph assertions exceeded). Checks:

- every valid request answers 200 with well-formed output, and a deterministic one (greedy or
  seeded generation, score, status, metadata) answers exactly what it answered the first time;
- every invalid request answers its expected 4xx status with a JSON `{"error": ...}` body
  holding the expected message;
- no answer is a 5xx or a dropped connection, and the server is alive at the end and exits 0
  on SIGTERM;
- memory is flat: RSS, sampled every 100 requests, grows less than `--max-growth-mib` from the
  end of the warm-up (the first 200 requests, which compile every decoding shape) to the end,
  and from any later sample to any after it.

Writes bench/out/soak.json and exits 1 when a check fails.
"""

import argparse
import base64
import concurrent.futures
import dataclasses
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runnable from a checkout without installing the package.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from bench_common import write_atomically  # noqa: E402
from tests.trainers.run_testing import CAUSAL_LM_RUN as TINY  # noqa: E402
from tfllm import cli  # noqa: E402
from tfllm.run import Run  # noqa: E402

OUT_DIR = os.path.join(REPO_ROOT, "bench", "out")
NAME = "soak"
LIMITS = {"max_body_bytes": 65536, "max_batch_size": 4, "max_new_tokens": 8}
SAMPLE_EVERY = 100
WARMUP_REQUESTS = 200
# One slot in 11 of these three is invalid: 27% of the requests.
INVALID_SLOTS = {3, 7, 10}
SLOTS = 11


@dataclasses.dataclass(frozen=True)
class Case:
    """One kind of request and what its answer must be.

    `check(answer)` returns what is wrong with a 200 answer, or None. An error answer must be
    exactly `{"error": str}` with `message` in it. A `deterministic` case must answer the same
    every time.
    """

    name: str
    method: str
    path: str
    body: bytes = None
    expected_status: int = 200
    message: str = ""
    check: object = None
    family: str = "get"
    deterministic: bool = True

    def problem(self, status, answer):
        if status != self.expected_status:
            return f"status {status}, expected {self.expected_status}: {answer!r:.200}"
        if self.expected_status == 200:
            return self.check(answer)
        if not (isinstance(answer, dict) and list(answer) == ["error"] and isinstance(answer["error"], str)):
            return f"error answer is not {{'error': str}}: {answer!r:.200}"
        if self.message not in answer["error"]:
            return f"error {answer['error']!r:.200} lacks {self.message!r}"
        return None


def as_json(document):
    return json.dumps(document).encode()


def generate_body(prompts, max_new_tokens, signature="generate", **settings):
    inputs = {"prompts": prompts, "max_new_tokens": max_new_tokens,
              **{"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0, **settings}}
    return as_json({"signature_name": signature, "inputs": inputs} if signature else {"inputs": inputs})


def generate_check(batch, max_new_tokens):
    def check(answer):
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, dict) or set(outputs) != {"text", "num_tokens"}:
            return f"not {{'outputs': {{'text', 'num_tokens'}}}}: {answer!r:.200}"
        texts, counts = outputs["text"], outputs["num_tokens"]
        if len(texts) != batch or len(counts) != batch or not all(isinstance(t, str) for t in texts):
            return f"expected {batch} texts and counts: {outputs!r:.200}"
        if not all(isinstance(n, int) and 0 <= n <= max_new_tokens for n in counts):
            return f"num_tokens outside [0, {max_new_tokens}]: {counts}"
        return None
    return check


def score_check(texts, rows):
    def check(answer):
        key = "predictions" if rows else "outputs"
        if not isinstance(answer, dict) or list(answer) != [key]:
            return f"not {{{key!r}: ...}}: {answer!r:.200}"
        columns = answer[key]
        if rows:  # one object per text: turn them into columns
            if not (isinstance(columns, list) and len(columns) == len(texts)
                    and all(isinstance(row, dict) for row in columns)):
                return f"expected {len(texts)} predictions: {columns!r:.200}"
            columns = {name: [row.get(name) for row in columns] for name in columns[0]}
        if set(columns) != {"log_probability", "num_tokens", "perplexity"}:
            return f"unexpected outputs {sorted(columns)}"
        for text, log_p, n, perplexity in zip(texts, columns["log_probability"], columns["num_tokens"],
                                              columns["perplexity"], strict=True):
            expected = 1.0 if n == 0 else math.exp(-log_p / n)
            if (n == 0) != (text == "") or not log_p <= 0 or not math.isclose(perplexity, expected, rel_tol=1e-4):
                return f"score of {text!r} is inconsistent: {log_p}, {n}, {perplexity}"
        return None
    return check


def status_check(answer):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    return None if answer == expected else f"status {answer!r:.200}"


def metadata_check(answer):
    try:
        signatures = answer["metadata"]["signature_def"]["signature_def"]
        ok = answer["model_spec"]["version"] == "1" and {"generate", "score", "serving_default"} <= set(signatures)
    except (KeyError, TypeError):
        ok = False
    return None if ok else f"metadata {answer!r:.200}"


def valid_cases(name, limits):
    """Requests that must succeed: five decoding shapes, sampling settings, score, status, metadata."""
    base, most = f"/v1/models/{name}", limits["max_new_tokens"]
    predict = base + ":predict"
    texts = ["def f(x):", "", "The é€ "]
    encoded = base64.b64encode(b"print(1)").decode()

    def generate(case_name, prompts, new, path=predict, deterministic=True, **body):
        return Case(case_name, "POST", path, generate_body(prompts, new, **body),
                    check=generate_check(len(prompts), new), family="generate", deterministic=deterministic)

    return [
        generate("generate_batch_1", ["def f(x):"], most),
        generate("generate_batch_2", ["The é€ ", ""], 5),
        generate("generate_batch_3", ["import os", "class A:", "x = 1"], 3),
        generate("generate_batch_4", ["a", "bb", "ccc", "dddd"], most),
        generate("generate_prompt_over_context", ["import os\n" * 5], most),  # cut from the left
        generate("generate_top_k_seeded", ["for i in", "while"], 6, temperature=0.8, top_k=10, seed=7),
        generate("generate_top_p_seeded", ["print("], most, temperature=1.0, top_p=0.9, seed=3),
        generate("generate_fresh_seed", ["if x:", "else"], most, deterministic=False, temperature=1.0, seed=-1),
        generate("generate_serving_default", ["return"], 4, signature=None),
        generate("generate_versioned", ["def g("], 2, path=base + "/versions/1:predict"),
        Case("score_rows", "POST", predict, as_json({"signature_name": "score", "instances": texts}),
             check=score_check(texts, rows=True), family="score"),
        Case("score_columns_b64", "POST", predict,
             as_json({"signature_name": "score", "inputs": {"texts": ["x = 1", {"b64": encoded}]}}),
             check=score_check(["x = 1", "print(1)"], rows=False), family="score"),
        Case("status", "GET", base, check=status_check),
        Case("status_versioned", "GET", base + "/versions/1", check=status_check),
        Case("metadata", "GET", base + "/metadata", check=metadata_check),
    ]


def invalid_cases(name, limits):
    """Requests that must be refused with a 4xx and a JSON error naming the problem."""
    base, most = f"/v1/models/{name}", limits["max_new_tokens"]
    predict = base + ":predict"
    huge_integer = b"1" + b"0" * 400  # valid JSON, beyond float32 (and float64)

    def bad(case_name, body, message, status=400, method="POST", path=predict):
        body = body if body is None or isinstance(body, bytes) else as_json(body)
        return Case(case_name, method, path, body, expected_status=status, message=message)

    return [
        bad("malformed_json", b'{"inputs": ', "JSON Parse error"),
        bad("empty_body", b"", "JSON Parse error"),
        bad("not_an_object", b"[1, 2]", "Is not object"),
        bad("not_utf8", b'{"inputs": "\xff\xfe"}', "JSON Parse error"),
        bad("json_nested_too_deeply", b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        bad("no_inputs_or_instances", {"signature_name": "generate"}, "Missing 'inputs' or 'instances' key"),
        bad("inputs_and_instances", {"inputs": {}, "instances": []}, "only one of 'inputs' or 'instances'"),
        bad("unknown_signature", {"signature_name": "translate", "inputs": {}}, 'signature key "translate" not found'),
        bad("signature_name_not_a_string", {"signature_name": 3, "inputs": {}}, "must be a string value"),
        bad("signature_name_lone_surrogate", {"signature_name": "\ud800", "inputs": {}}, "not found"),
        bad("max_new_tokens_a_string", generate_body(["a"], "8"), "expects int32 values"),
        bad("prompts_not_strings", generate_body([1, 2], 2), "expects string values"),
        bad("temperature_a_boolean", generate_body(["a"], 2, temperature=True), "expects float32 values"),
        bad("temperature_integer_too_large",
            generate_body(["a"], 2, temperature=7).replace(b": 7,", b": " + huge_integer + b","),
            "cannot be converted"),
        bad("prompt_lone_surrogate", {"signature_name": "score", "instances": ["\ud800"]}, "cannot be converted"),
        bad("texts_nested_100_deep",  # NumPy arrays have at most 64 dimensions
            {"signature_name": "score", "inputs": {"texts": json.loads("[" * 100 + '"a"' + "]" * 100)}},
            "cannot be converted"),
        bad("missing_named_input", {"inputs": {"prompts": ["a"], "max_new_tokens": 2}}, "Missing named input"),
        bad("unknown_input", {"signature_name": "score", "inputs": {"texts": ["a"], "lang": "en"}},
            "which the signature does not take"),
        bad("scalars_in_rows", {"signature_name": "generate", "instances": [
            {"prompts": "a", "max_new_tokens": 2, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}]},
            "must have shape ()"),
        bad("batch_too_large", generate_body(["a"] * (limits["max_batch_size"] + 1), 2), "(--max-batch-size)"),
        bad("too_many_new_tokens", generate_body(["a"], most + 1), "(--max-new-tokens)"),
        bad("zero_new_tokens", generate_body(["a"], 0), "max_new_tokens must be between 1"),
        bad("top_p_zero", generate_body(["a"], 2, top_p=0.0), "top_p must be > 0"),
        bad("temperature_nan", generate_body(["a"], 2, temperature=float("nan")),
            "temperature must be a finite number"),
        bad("no_prompts", generate_body([], 2), "prompts must hold at least one prompt"),
        bad("no_instances", {"signature_name": "score", "instances": []}, "must be a non-empty list"),
        bad("body_too_large", {"signature_name": "score", "instances": ["x" * limits["max_body_bytes"]]},
            "exceeds the limit", status=413),
        bad("get_predict", None, "Malformed request", status=404, method="GET"),
        bad("put_predict", generate_body(["a"], 2), "Malformed request", status=404, method="PUT"),
        bad("post_status", b"{}", "Malformed request", status=404, path=base),
        bad("unknown_model", generate_body(["a"], 2), "Servable not found", status=404,
            path="/v1/models/other:predict"),
        bad("unknown_version", None, "Servable not found", status=404, method="GET", path=base + "/versions/7"),
        bad("version_label", None, "Unrecognized servable version label", status=404, method="GET",
            path=base + "/labels/stable"),
        bad("classify", {"examples": []}, "use :predict", path=base + ":classify"),
        bad("unknown_path", None, "Malformed request", status=404, method="GET", path="/v2/models"),
    ]


def prepare(run_dir):
    """The export of `run_dir` (of the tiny run every test of export/ uses when None)."""
    if run_dir is None:
        run_dir = os.path.join(OUT_DIR, "soak_run")
        if Run(run_dir).checkpoints.preferred() is None:
            assert cli.main(["train", "--run-dir", run_dir, *TINY]) == 0
    export_dir = os.path.join(OUT_DIR, "soak_export")
    assert cli.main(["export", "--run-dir", run_dir, "--out", export_dir, "--version", "1", "--force"]) == 0
    return export_dir


def start_server(export_dir, log_path, timeout=180):
    """`tfllm serve` in a subprocess; returns (process, host, port) once it listens."""
    limits = [arg for key, value in LIMITS.items() for arg in (f"--{key.replace('_', '-')}", str(value))]
    with open(log_path, "w") as log:  # the child keeps its own copy of the file descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "tfllm.cli", "serve", "--model", export_dir, "--port", "0", "--name", NAME,
             *limits],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT,
        )
    # readline() has no timeout: a server stuck while loading is killed instead.
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    line = process.stdout.readline()
    watchdog.cancel()
    if not line.startswith("Serving"):
        process.kill()
        raise RuntimeError(f"tfllm serve did not start; see {log_path}")
    address = line.split(" at http://")[1].split("/")[0]  # 127.0.0.1:PORT
    host, port = address.rsplit(":", 1)
    return process, host, int(port)


def rss_mib(pid):
    """(VmRSS, VmHWM) of process `pid` in MiB: its resident memory now, and its peak."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def send(host, port, case):
    """(status or None, parsed JSON or None, seconds, transport error or None) of one request."""
    connection = http.client.HTTPConnection(host, port, timeout=300)
    headers = {"Content-Type": "application/json"} if case.body is not None else {}
    start = time.perf_counter()
    try:
        connection.request(case.method, case.path, body=case.body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as error:
        return None, None, time.perf_counter() - start, f"{type(error).__name__}: {error}"
    finally:
        connection.close()
    seconds = time.perf_counter() - start
    try:
        return response.status, json.loads(data), seconds, None
    except ValueError:
        return response.status, None, seconds, f"not JSON: {data[:80]!r}"


def schedule(requests):
    """The case of every request: a fixed rotation of valid and invalid cases."""
    valid, invalid = valid_cases(NAME, LIMITS), invalid_cases(NAME, LIMITS)
    order, counts = [], {True: 0, False: 0}
    for i in range(requests):
        is_valid = i % SLOTS not in INVALID_SLOTS
        pool = valid if is_valid else invalid
        order.append(pool[counts[is_valid] % len(pool)])
        counts[is_valid] += 1
    return order


class Soak:
    """Sends the scheduled requests from `clients` threads, checking answers and sampling RSS."""

    def __init__(self, host, port, pid, order):
        self.host, self.port, self.pid, self.order = host, port, pid, order
        self.lock = threading.Lock()
        self.done = 0
        self.first_answers = {}
        self.failures = []
        self.latencies = {"generate": [], "score": [], "get": []}  # (request index, seconds)
        self.statuses = {}
        self.rss = []  # (requests done, VmRSS MiB, VmHWM MiB)

    def one(self, index):
        case = self.order[index]
        status, answer, seconds, transport_error = send(self.host, self.port, case)
        try:
            problem = transport_error or case.problem(status, answer)
        except (AttributeError, KeyError, TypeError, ValueError) as error:  # an answer of an unexpected shape
            problem = f"malformed answer ({type(error).__name__}: {error}): {answer!r:.200}"
        with self.lock:
            if problem is None and case.deterministic:
                first = self.first_answers.setdefault(case.name, answer)
                if answer != first:
                    problem = f"answer differs from the first answer to the same request: {answer!r:.200}"
            if problem:
                self.failures.append({"request": index, "case": case.name, "status": status, "problem": problem})
            if case.expected_status == 200 and problem is None:
                self.latencies[case.family].append((index, seconds))
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.done += 1
            if self.done % SAMPLE_EVERY == 0:
                self.rss.append((self.done, *rss_mib(self.pid)))

    def run(self, clients):
        self.rss.append((0, *rss_mib(self.pid)))
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(self.one, range(len(self.order))))
        return time.perf_counter() - start


def memory_summary(samples, max_growth_mib):
    """RSS after the warm-up and at the end, the growth between them, the peak, and the verdict."""
    after_warmup = next(rss for done, rss, _ in samples if done >= WARMUP_REQUESTS)
    end = samples[-1][1]
    growth = end - after_warmup
    # The largest rise from any sample after the warm-up to a later one: a leak shows there even
    # when the allocator hands a block of memory back to the system in between.
    post_warmup = [rss for done, rss, _ in samples if done >= WARMUP_REQUESTS]
    max_rise = max(later - min(post_warmup[:i]) for i, later in enumerate(post_warmup) if i)
    return {
        "rss_start_mib": samples[0][1], "rss_after_warmup_mib": after_warmup, "rss_end_mib": end,
        "rss_max_mib": max(rss for _, rss, _ in samples), "rss_peak_vmhwm_mib": samples[-1][2],
        "growth_mib": growth, "growth_percent": 100 * growth / after_warmup, "max_rise_mib": max_rise,
        "bound_mib": max_growth_mib, "flat": growth < max_growth_mib and max_rise < max_growth_mib,
    }


def latency_summary(latencies, wall, requests):
    """Requests/s over the run, and p50/p95 of the valid requests: all, after the warm-up, per family.

    The warm-up's first requests of each batch size wait for XLA to compile their decoding loop.
    """
    valid = [pair for pairs in latencies.values() for pair in pairs]
    after_warmup = [pair for pair in valid if pair[0] >= WARMUP_REQUESTS]
    summary = {"requests_per_s": requests / wall, "wall_s": wall}
    for group, pairs in {"valid": valid, "valid_after_warmup": after_warmup, **latencies}.items():
        seconds = [s for _, s in pairs]
        if seconds:
            summary[group] = {"count": len(seconds), "p50_ms": 1000 * float(np.percentile(seconds, 50)),
                              "p95_ms": 1000 * float(np.percentile(seconds, 95)),
                              "max_ms": 1000 * max(seconds)}
    return summary


def stop_server(process):
    """SIGTERM, then the exit code (None when it had to be killed)."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="a trained run (default: train a tiny char run)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-growth-mib", type=float, default=20.0,
                        help="RSS growth after the warm-up (end minus warm-up, and largest rise) "
                             "below which memory counts as flat")
    parser.add_argument("--out", default=os.path.join(OUT_DIR, "soak.json"), help="JSON output path")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.requests < WARMUP_REQUESTS + 2 * SAMPLE_EVERY:
        raise SystemExit(f"--requests must be at least {WARMUP_REQUESTS + 2 * SAMPLE_EVERY}")
    export_dir = prepare(args.run_dir)
    process, host, port = start_server(export_dir, os.path.join(OUT_DIR, "soak_server.log"))
    try:
        order = schedule(args.requests)
        soak = Soak(host, port, process.pid, order)
        wall = soak.run(args.clients)
        alive = process.poll() is None and send(host, port, order[0])[0] == 200
    finally:
        exit_code = stop_server(process)
    invalid = sum(case.expected_status != 200 for case in order)
    result = {
        "requests": args.requests, "clients": args.clients, "invalid_requests": invalid,
        "invalid_fraction": invalid / args.requests, "limits": LIMITS,
        "statuses": {str(k): v for k, v in sorted(soak.statuses.items(), key=lambda kv: str(kv[0]))},
        "failures": len(soak.failures), "first_failures": soak.failures[:20],
        "alive_at_end": alive, "exit_code_on_sigterm": exit_code,
        "memory": memory_summary(soak.rss, args.max_growth_mib),
        "throughput": latency_summary(soak.latencies, wall, args.requests),
        "rss_samples": [{"requests": d, "rss_mib": r, "vmhwm_mib": h} for d, r, h in soak.rss],
    }
    result["passed"] = (not soak.failures and alive and exit_code == 0 and result["memory"]["flat"]
                        and not any(str(s).startswith("5") or s is None for s in soak.statuses))
    write_atomically(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "rss_samples"}, indent=2))
    print(f"{'PASSED' if result['passed'] else 'FAILED'}; written to {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

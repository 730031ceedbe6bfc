"""Concurrent `generate` requests merged by `RequestBatcher`: the grouping on a fake signature, and
`tfllm serve` answering every reproducible request exactly as a call of its own answers it."""

import concurrent.futures
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.export.export_testing import PROMPTS, request
from tfllm import cli
from tfllm.export.request_batcher import Request, RequestBatcher, batch_sizes, default_batch_threads, group_key, plan, spread
from tfllm.export.rest_api import graph_error_message
from tfllm.export.server import ModelServer, Servable, load_servable

GENERATE_SPECS = {"prompts": tf.TensorSpec([None], tf.string, name="prompts"),
                  "max_new_tokens": tf.TensorSpec([], tf.int32, name="max_new_tokens"),
                  "temperature": tf.TensorSpec([], tf.float32, name="temperature"),
                  "top_k": tf.TensorSpec([], tf.int32, name="top_k"),
                  "top_p": tf.TensorSpec([], tf.float32, name="top_p"),
                  "seed": tf.TensorSpec([], tf.int32, name="seed")}
GREEDY = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}


def generate_inputs(prompts, max_new_tokens=4, **settings):
    return {"prompts": prompts, "max_new_tokens": max_new_tokens, **{**GREEDY, **settings}}


def generate_arrays(prompts, max_new_tokens=4, **settings):
    """A request's `generate` inputs as the REST API hands them to the batcher."""
    inputs = generate_inputs(prompts, max_new_tokens, **settings)
    return {name: np.array([p.encode() for p in value], dtype=object) if name == "prompts"
            else np.array(value, GENERATE_SPECS[name].dtype.as_numpy_dtype) for name, value in inputs.items()}


def wait_until(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


class FakeGenerate:
    """A `generate` call on NumPy arrays: answers each prompt with itself and the call's
    `max_new_tokens` and `temperature`, so that an answer from a call with other settings shows.
    Records every call's prompts, fails any call holding the prompt "bad", and holds its calls
    until `release` is set."""

    def __init__(self):
        self.calls = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, arrays):
        prompts = [p.decode() for p in arrays["prompts"]]
        self.calls.append(prompts)
        self.entered.set()
        assert self.release.wait(30)
        if "bad" in prompts:
            raise ValueError("a bad prompt")
        text = [f"{p}|{arrays['max_new_tokens']}|{arrays['temperature']}" for p in prompts]
        return {"text": np.array(text, dtype=object), "num_tokens": np.arange(len(prompts), dtype=np.int32)}


def answers_of_one_round(batcher, fake, requests):
    """The outputs (or exceptions) of `requests` (arrays), all queued while the worker is held in a
    first call, in this order: the worker then plans them as one round."""
    with concurrent.futures.ThreadPoolExecutor(len(requests) + 1) as pool:
        first = pool.submit(batcher.run, "generate", fake, generate_arrays(["first"]))
        assert fake.entered.wait(30)
        futures = []
        for arrays in requests:
            futures.append(pool.submit(batcher.run, "generate", fake, arrays))
            wait_until(lambda: batcher.queue_length() == len(futures))
        fake.release.set()
        assert first.result()["text"].tolist() == ["first|4|0.0"]
        return [future.exception() or future.result() for future in futures]


def test_group_keys_merge_only_requests_that_one_call_answers_unchanged():
    greedy = group_key(generate_arrays(["a"]))
    assert greedy == ("greedy", 4)
    # top_k, top_p and seed do not change a greedy answer.
    assert group_key(generate_arrays(["b", "c"], seed=9, top_k=3, top_p=0.5)) == greedy
    assert group_key(generate_arrays(["a"], max_new_tokens=8)) == ("greedy", 8)
    fresh = dict(temperature=0.5, top_k=3, top_p=0.9, seed=-1)
    assert group_key(generate_arrays(["a"], **fresh)) == ("sampled", 4, 0.5, 3, np.float32(0.9).item())
    assert group_key(generate_arrays(["a"], **{**fresh, "seed": -7})) == group_key(generate_arrays(["a"], **fresh))
    hotter = generate_arrays(["a"], **{**fresh, "temperature": 0.7})
    assert group_key(hotter) != group_key(generate_arrays(["a"], **fresh))
    # Alone: a reproducible draw, no prompt, or a setting the graph refuses (its own 400).
    for alone in (generate_arrays(["a"], **{**fresh, "seed": 0}), generate_arrays([]),
                  generate_arrays(["a"], top_p=0.0), generate_arrays(["a"], top_k=-1),
                  generate_arrays(["a"], temperature=-1.0), generate_arrays(["a"], temperature=float("nan"), seed=-1)):
        assert group_key(alone) is None


def test_batch_sizes_are_powers_of_two_up_to_the_limit():
    assert batch_sizes(8) == [1, 2, 4, 8]
    assert batch_sizes(6) == [1, 2, 4, 6]
    assert batch_sizes(1) == [1]


@pytest.mark.parametrize("pad", [False, True])
def test_one_round_is_planned_by_settings_and_size_and_answered_in_order(pad):
    fake, batcher = FakeGenerate(), RequestBatcher(max_batch_size=4, batch_timeout_ms=0, pad=pad)
    fresh = dict(temperature=0.5, seed=-1)
    requests = [
        generate_arrays(["a1", "a2"]),
        generate_arrays(["b1"], max_new_tokens=8),
        generate_arrays(["c1"], seed=9, top_k=3),  # greedy like a: merged with it
        generate_arrays(["d1"], temperature=0.5, seed=5),  # seeded: alone
        generate_arrays(["e1"], **fresh),
        generate_arrays(["f1", "f2"]),  # a's group, but a + c + f would be 5 prompts
        generate_arrays(["g1"], **fresh),
        generate_arrays(["h1"], **{**fresh, "temperature": 0.7}),
    ]
    answers = answers_of_one_round(batcher, fake, requests)
    batcher.stop()

    for arrays, answer in zip(requests, answers):
        settings = f"|{arrays['max_new_tokens']}|{arrays['temperature']}"
        assert answer["text"].tolist() == [p.decode() + settings for p in arrays["prompts"]]
    # Each request gets its own rows of the merged outputs: a the first two, c the third.
    assert [answer["num_tokens"].tolist() for answer in answers[:3]] == [[0, 1], [0], [2]]
    a_and_c = ["a1", "a2", "c1"] + (["a1"] if pad else [])  # padded to 4 with a copy of the first prompt
    assert fake.calls == [["first"], a_and_c, ["b1"], ["d1"], ["e1", "g1"], ["f1", "f2"], ["h1"]]

    stats = batcher.stats()
    assert {key: stats[key] for key in ("requests", "rows", "batches", "merged_batches", "max_batch_requests",
                                        "max_batch_rows", "padding_rows", "fallbacks", "queue_length")} == {
        "requests": 9, "rows": 11, "batches": 7, "merged_batches": 2, "max_batch_requests": 2, "max_batch_rows": 3,
        "padding_rows": 1 if pad else 0, "fallbacks": 0, "queue_length": 0}
    assert stats["batch_requests_histogram"] == {"1": 5, "2": 2}
    assert (stats["mean_batch_requests"], stats["mean_batch_rows"]) == (round(9 / 7, 3), round(11 / 7, 3))
    assert [(b["requests"], b["rows"]) for b in stats["recent_batches"]] == [(1, 1), (2, 3), (1, 1), (1, 1), (2, 2),
                                                                            (1, 2), (1, 1)]


def test_spread_halves_the_largest_merged_calls_between_requests_while_threads_would_idle():
    def calls_of(*row_counts, settings=None):
        """Calls of `plan` for requests of these numbers of prompts, greedy unless `settings`."""
        requests = [Request("generate", None, generate_arrays([f"p{i}"] * n, **(settings or {})))
                    for i, n in enumerate(row_counts)]
        return plan(requests, max_batch_size=64)

    def shape(calls):
        return [[request.rows for request in call] for call in calls]

    eight = calls_of(*[1] * 8)
    assert shape(spread(eight, 1)) == [[1] * 8]
    assert shape(spread(eight, 2)) == [[1] * 4, [1] * 4]
    assert shape(spread(eight, 4)) == [[1, 1]] * 4
    assert shape(spread(eight, 8)) == [[1, 1]] * 4  # halves of one prompt are too small
    assert shape(spread(eight, 4, min_rows=4)) == [[1] * 4, [1] * 4]
    assert shape(spread(eight, 3)) == [[1, 1], [1, 1], [1] * 4]  # the largest first
    assert shape(spread(calls_of(*[1] * 7), 2)) == [[1] * 3, [1] * 4]
    assert shape(spread(calls_of(3, 1, 1, 3), 2)) == [[3, 1], [1, 3]]
    assert shape(spread(calls_of(5, 1, 1, 1), 2)) == [[5], [1, 1, 1]]
    assert shape(spread(calls_of(1, 1, 1), 2)) == [[1, 1, 1]]
    assert shape(spread(calls_of(8), 2)) == [[8]]  # one request: nothing to cut between
    # A seeded draw runs alone; the merged group after it is halved in its place.
    mixed = calls_of(1, settings=dict(temperature=0.5, seed=3)) + eight
    assert [[r.arrays["prompts"][0].decode() for r in call] for call in spread(mixed, 3)] == [
        ["p0"], ["p0", "p1", "p2", "p3"], ["p4", "p5", "p6", "p7"]]


def test_with_two_threads_the_halves_of_a_round_run_at_once_and_answer_each_request():
    both_in = threading.Barrier(2, timeout=30)  # passes only while two calls run at the same time

    class TwoAtOnce(FakeGenerate):
        def __call__(self, arrays):
            if arrays["prompts"].tolist() != [b"first"]:
                both_in.wait()
            return super().__call__(arrays)

    fake, batcher = TwoAtOnce(), RequestBatcher(max_batch_size=16, batch_timeout_ms=0, batch_threads=2)
    requests = [generate_arrays([f"q{i}"]) for i in range(8)]
    answers = answers_of_one_round(batcher, fake, requests)
    assert batcher.stop(30) and not batcher.running
    assert [answer["text"].tolist() for answer in answers] == [[f"q{i}|4|0.0"] for i in range(8)]
    # Each request gets its row of its half: the halves hold q0-q3 and q4-q7.
    assert [answer["num_tokens"].tolist() for answer in answers] == [[i % 4] for i in range(8)]
    assert sorted(fake.calls[1:]) == [[f"q{i}" for i in range(4)], [f"q{i}" for i in range(4, 8)]]
    stats = batcher.stats()
    assert (stats["batch_threads"], stats["batches"], stats["merged_batches"], stats["max_batch_rows"]) == (2, 3, 2, 4)
    assert default_batch_threads() == len(os.sched_getaffinity(0))  # no GPU here: one per core
    with pytest.raises(ValueError, match="batch_threads must be an integer >= 1. Received: batch_threads=0"):
        RequestBatcher(max_batch_size=8, batch_threads=0)


def test_a_failing_merged_call_falls_back_to_one_call_per_request():
    fake, batcher = FakeGenerate(), RequestBatcher(max_batch_size=8, batch_timeout_ms=0)
    answers = answers_of_one_round(batcher, fake, [generate_arrays(["ok1"]), generate_arrays(["bad"]),
                                                   generate_arrays(["ok2", "ok3"])])
    batcher.stop()
    assert fake.calls == [["first"], ["ok1", "bad", "ok2", "ok3"], ["ok1"], ["bad"], ["ok2", "ok3"]]
    assert answers[0]["text"].tolist() == ["ok1|4|0.0"] and answers[2]["text"].tolist() == ["ok2|4|0.0", "ok3|4|0.0"]
    assert isinstance(answers[1], ValueError) and str(answers[1]) == "a bad prompt"
    stats = batcher.stats()
    assert (stats["fallbacks"], stats["batches"], stats["merged_batches"], stats["requests"]) == (1, 4, 0, 4)


def test_stop_answers_the_queued_requests_then_ends_the_worker():
    fake, batcher = FakeGenerate(), RequestBatcher(max_batch_size=8, batch_timeout_ms=0)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(batcher.run, "generate", fake, generate_arrays(["x"]))]
        assert fake.entered.wait(30)
        futures.append(pool.submit(batcher.run, "generate", fake, generate_arrays(["y"])))
        wait_until(lambda: batcher.queue_length() == 1)
        stopper = pool.submit(batcher.stop, 30)
        assert batcher.running
        fake.release.set()
        assert stopper.result() and not batcher.running
        assert [future.result()["text"].tolist() for future in futures] == [["x|4|0.0"], ["y|4|0.0"]]
    # A request after stop() runs in its caller's thread.
    assert batcher.run("generate", fake, generate_arrays(["z"]))["text"].tolist() == ["z|4|0.0"]
    assert fake.calls == [["x"], ["y"], ["z"]]


def test_without_batching_each_request_runs_alone_and_at_once():
    both_in = threading.Barrier(2, timeout=30)  # passes only while two calls run at the same time
    calls = []

    def call(arrays):
        calls.append(arrays["prompts"].tolist())
        both_in.wait()
        return {"text": arrays["prompts"]}

    batcher = RequestBatcher(max_batch_size=8, batch_timeout_ms=1000, batching=False)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda p: batcher.run("generate", call, generate_arrays([p])), ["p", "q"]))
    assert [answer["text"].tolist() for answer in answers] == [[b"p"], [b"q"]]
    assert sorted(calls) == [[b"p"], [b"q"]] and not batcher.running
    assert batcher.stats()["batch_requests_histogram"] == {"1": 2} and not batcher.stats()["batching"]


@pytest.fixture(scope="module")
def server(export_dir):
    # The 16 concurrent requests below arrive within the long wait, and hold fewer prompts than a
    # call may: they are planned as one round, each group in one call, whatever their order.
    # Two threads: the calls of that round run two at a time.
    with ModelServer(load_servable(export_dir), "127.0.0.1", 0, max_body_bytes=4096, max_batch_size=32,
                     max_new_tokens=8, batch_timeout_ms=500, batch_threads=2) as server:
        yield server


def alone(server, inputs):
    """(status, body) of `inputs` in a direct call of the served `generate` signature, as
    `tfllm serve` answered it before it merged requests."""
    function = server.app.servable.signatures["generate"]
    try:
        outputs = function(**{name: tf.constant(value, GENERATE_SPECS[name].dtype) for name, value in inputs.items()})
    except tf.errors.InvalidArgumentError as error:
        return 400, {"error": graph_error_message(error)}
    return 200, {"outputs": {"text": [t.decode() for t in outputs["text"].numpy()],
                             "num_tokens": outputs["num_tokens"].numpy().tolist()}}


def test_16_concurrent_mixed_requests_get_the_answers_they_get_alone(server):
    # Prompts of 9, 0 and 6 characters. Not PROMPTS[3], which is cut to the context: its longer
    # buffer would be one more shape for XLA to compile, for each batch size.
    p0, p1, p2 = PROMPTS[:3]
    # Every greedy request holds a prompt whose completion shows its max_new_tokens (the empty
    # prompt's is empty): a call shared across 4 and 8 new tokens would change some answer.
    reproducible = [
        generate_inputs([p0]), generate_inputs([p0], 8),
        generate_inputs([p2], seed=7, top_k=3, top_p=0.5), generate_inputs([p2, p0], 8),  # greedy all the same
        generate_inputs([p1, p2]), generate_inputs([p2], 8, seed=-1),
        generate_inputs([p0, p1]), generate_inputs([p1, p0], 8),
        # Seeded draws: each alone; a shared call would change the seed or the row of one of them.
        generate_inputs([p0], temperature=0.8, top_k=5, seed=3),
        generate_inputs([p0], temperature=0.8, top_k=5, seed=3),
        generate_inputs([p2], temperature=0.8, top_k=5, seed=4), generate_inputs([p2, p1], 6, temperature=1.0, seed=11),
        generate_inputs([p0], top_p=0.0), generate_inputs([p1], temperature=-1.0),  # refused: 400
    ]
    # Fresh draws: nothing to compare but their shape. Two prompts: a batch size already compiled.
    fresh = [generate_inputs([p0], 8, temperature=1.0, seed=-1), generate_inputs([p2], 8, temperature=1.0, seed=-1)]
    expected = [alone(server, inputs) for inputs in reproducible]
    assert [status for status, _ in expected] == [200] * 12 + [400] * 2
    before = request(f"{server.url}/v1/models/tiny/stats")[1]

    bodies = [{"signature_name": "generate", "inputs": inputs} for inputs in reproducible + fresh]
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: request(f"{server.url}/v1/models/tiny:predict", body), bodies))

    assert answers[:len(reproducible)] == expected
    for inputs, (status, body) in zip(fresh, answers[len(reproducible):]):
        assert status == 200 and len(body["outputs"]["text"]) == len(inputs["prompts"])
        assert all(0 <= n <= inputs["max_new_tokens"] for n in body["outputs"]["num_tokens"])
    after = request(f"{server.url}/v1/models/tiny/stats")[1]
    assert after["requests"] - before["requests"] == 16
    assert after["rows"] - before["rows"] == 21
    assert after["merged_batches"] > before["merged_batches"] and after["max_batch_requests"] >= 2


def test_the_stats_path_counts_the_calls(server):
    url = f"{server.url}/v1/models/tiny"
    before = request(url + "/stats")[1]
    for prompts in ([PROMPTS[0]], PROMPTS[1:3]):
        assert request(url + ":predict", {"inputs": generate_inputs(prompts)})[0] == 200
    assert request(url + ":predict", {"signature_name": "score", "instances": PROMPTS[:2]})[0] == 200  # not counted
    status, after = request(url + "/versions/1/stats")
    assert status == 200 and after == request(url + "/stats")[1]
    assert {key: after[key] - before[key] for key in ("requests", "rows", "batches", "merged_batches")} == {
        "requests": 2, "rows": 3, "batches": 2, "merged_batches": 0}
    assert after["batch_requests_histogram"]["1"] - before["batch_requests_histogram"].get("1", 0) == 2
    last_two = after["recent_batches"][-2:]
    assert [(b["requests"], b["rows"], b["padding_rows"]) for b in last_two] == [(1, 1, 0), (1, 2, 0)]
    assert sum(int(size) * count for size, count in after["batch_requests_histogram"].items()) == after["requests"]
    assert after["queue_length"] == 0
    assert (after["batching"], after["batch_timeout_ms"], after["max_batch_size"], after["batch_threads"]) == (
        True, 500, 32, 2)
    for path, method in (("/statistics", None), ("/stats", "POST"), ("/versions/2/stats", None)):
        assert request(url + path, b"{}" if method else None, method)[0] == 404
    assert request(f"{server.url}/v1/models/other/stats")[0] == 404


class HeldGenerate:
    """A `generate` signature that holds its calls until released and records their prompts."""

    structured_input_signature = ((), GENERATE_SPECS)

    def __init__(self):
        self.calls = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, prompts, **settings):
        self.calls.append([p.decode() for p in prompts.numpy()])
        self.entered.set()
        assert self.release.wait(30)
        return {"text": prompts, "num_tokens": tf.fill(tf.shape(prompts), settings["max_new_tokens"])}


def test_stopping_lets_the_running_and_queued_generate_requests_finish():
    held = HeldGenerate()
    servable = Servable(name="held", version=1, path="", signatures={"generate": held}, signature_defs={})
    server = ModelServer(servable, "127.0.0.1", 0, max_body_bytes=4096, max_batch_size=8, max_new_tokens=8,
                         batch_timeout_ms=0).start()
    url = f"{server.url}/v1/models/held:predict"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(request, url, {"signature_name": "generate", "inputs": generate_inputs(["a"])})]
        assert held.entered.wait(30)
        for p in ("b", "c"):
            answers.append(pool.submit(request, url, {"signature_name": "generate", "inputs": generate_inputs([p])}))
            wait_until(lambda: server.app.batcher.queue_length() == len(answers) - 1)
        stopper = pool.submit(server.stop)
        with pytest.raises(concurrent.futures.TimeoutError):
            stopper.result(timeout=0.3)  # the server waits for them
        held.release.set()
        stopper.result(timeout=30)
        assert [answer.result() for answer in answers] == [
            (200, {"outputs": {"text": [p], "num_tokens": [4]}}) for p in ("a", "b", "c")]
    assert held.calls == [["a"], ["b", "c"]] and not server.app.batcher.running


def test_batching_flags(export_dir, capsys):
    args = cli.build_parser().parse_args(["serve", "--model", "exports/x"])
    assert (args.batch_timeout_ms, args.no_batching, args.num_batch_threads) == (5, False, None)
    args = cli.build_parser().parse_args(["serve", "--model", "exports/x", "--batch-timeout-ms", "0", "--no-batching",
                                          "--num-batch-threads", "3"])
    assert (args.batch_timeout_ms, args.no_batching, args.num_batch_threads) == (0, True, 3)
    for flag, value, message in (
            ("--batch-timeout-ms", "-1", "argument --batch-timeout-ms: -1 is not a wait in milliseconds (0-60000"),
            ("--batch-timeout-ms", "60001", "argument --batch-timeout-ms: 60001 is not a wait in milliseconds"),
            ("--batch-timeout-ms", "2.5", "argument --batch-timeout-ms: invalid milliseconds value: '2.5'"),
            ("--num-batch-threads", "0", "argument --num-batch-threads: 0 is not a number of threads (1-1024)")):
        assert cli.main(["serve", "--model", export_dir, flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("tfllm serve: error: ") and message in err

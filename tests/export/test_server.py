"""`tfllm serve` over loopback: answers equal direct SavedModel calls, errors, concurrency, shutdown."""

import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
import tensorflow as tf

from tfllm.export.server import ModelServer, Servable, load_servable
from tests.export.export_testing import PROMPTS, request
from tfllm import cli

LIMITS = {"max_body_bytes": 4096, "max_batch_size": 4, "max_new_tokens": 8}
# Pairs of short prompts: every request below decodes the same shapes, so XLA compiles once.
PAIRS = [PROMPTS[:2], PROMPTS[1:3], [PROMPTS[2], PROMPTS[0]]]
GREEDY = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
TYPES = {"prompts": tf.string, "max_new_tokens": tf.int32, "temperature": tf.float32, "top_k": tf.int32,
         "top_p": tf.float32, "seed": tf.int32, "texts": tf.string}


@pytest.fixture(scope="module")
def server(export_dir):
    with ModelServer(load_servable(export_dir), "127.0.0.1", 0, **LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def direct(server):
    """The served SavedModel's signatures, called directly: no HTTP, no JSON.

    The server's own loaded signatures, so that XLA compiles each shape once for both.
    """
    signatures = server.app.servable.signatures

    def call(signature, **inputs):
        out = signatures[signature](**{name: tf.constant(value, TYPES[name]) for name, value in inputs.items()})
        return {name: [v.decode() if isinstance(v, bytes) else v for v in tensor.numpy().tolist()]
                for name, tensor in out.items()}

    return call


def model_url(server, suffix=""):
    return f"{server.url}/v1/models/tiny{suffix}"


def test_the_server_answers_on_loopback_with_the_newest_version(server):
    assert server.host == "127.0.0.1" and server.port > 0
    status, body = request(model_url(server))
    assert status == 200 and body["model_version_status"][0]["version"] == "1"
    status, body = request(model_url(server, "/metadata"))
    assert status == 200 and {"generate", "score", "serving_default"} <= set(body["metadata"]["signature_def"]
                                                                             ["signature_def"])


def test_serve_binds_to_loopback_unless_told_otherwise():
    args = cli.build_parser().parse_args(["serve", "--model", "exports/x"])
    assert (args.host, args.port) == ("127.0.0.1", 8501)


def test_predict_equals_a_direct_saved_model_call(server, direct):
    inputs = {"prompts": PAIRS[0], "max_new_tokens": 6, **GREEDY}
    assert request(model_url(server, ":predict"), {"signature_name": "generate", "inputs": inputs}) == (
        200, {"outputs": direct("generate", **inputs)})
    assert request(model_url(server, ":predict"), {"inputs": inputs}) == (
        200, {"outputs": direct("generate", **inputs)})
    status, body = request(model_url(server, ":predict"), {"signature_name": "score", "instances": PROMPTS[:3]})
    expected = direct("score", texts=PROMPTS[:3])
    assert status == 200
    assert body["predictions"] == [{name: expected[name][row] for name in expected} for row in range(3)]


@pytest.mark.parametrize(
    "suffix, body, status, message",
    [
        (":predict", b'{"inputs": ', 400, "JSON Parse error"),
        (":predict", {"signature_name": "translate", "inputs": {}}, 400, 'Serving signature key "translate" not found'),
        (":predict", {"signature_name": "score", "inputs": {"texts": [1]}}, 400, "expects string values"),
        (":predict", {"inputs": {"prompts": ["a"], "max_new_tokens": "8", **GREEDY}}, 400, "expects int32 values"),
        (":predict", {"inputs": {"prompts": ["a"], "max_new_tokens": 9, **GREEDY}}, 400, "(--max-new-tokens)"),
        (":predict", {"inputs": {"prompts": ["a"] * 5, "max_new_tokens": 2, **GREEDY}}, 400, "(--max-batch-size)"),
        (":predict", {"inputs": {"prompts": ["a"], "max_new_tokens": 2, **GREEDY, "top_p": 0.0}}, 400,
         "top_p must be > 0 and <= 1 (1 turns it off). Received: top_p = 0"),
        (":predict", {"signature_name": "score", "inputs": {"texts": ["x" * 5000]}}, 413, "exceeds the limit of 4096"),
    ],
)
def test_bad_requests_get_the_right_status_and_message(server, suffix, body, status, message):
    answer_status, answer = request(model_url(server, suffix), body)
    assert answer_status == status and message in answer["error"]


def test_unknown_models_and_versions_are_404(server):
    assert request(f"{server.url}/v1/models/other:predict", {"inputs": {}}) == (
        404, {"error": "Servable not found for request: Latest(other)"})
    assert request(model_url(server, "/versions/2"))[0] == 404


def test_100_requests_from_8_concurrent_clients_all_succeed(server, direct):
    cases = [{"prompts": PAIRS[i % 3], "max_new_tokens": 2 + i, **GREEDY} for i in range(6)]
    expected = [direct("generate", **case) for case in cases]

    def one(i):
        return request(model_url(server, ":predict"), {"signature_name": "generate", "inputs": cases[i % 6]})

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(100)))
    assert [status for status, _ in answers] == [200] * 100
    assert all(body == {"outputs": expected[i % 6]} for i, (_, body) in enumerate(answers))


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("tfllm serve: error: ")
    return err


def test_serving_a_directory_without_a_saved_model_is_one_line_and_exit_code_2(export_dir, tmp_path, capsys):
    assert cli.main(["serve", "--model", str(tmp_path)]) == 2
    assert f"--model {tmp_path} holds no SavedModel" in error_line(capsys)
    assert cli.main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in error_line(capsys)
    assert cli.main(["serve", "--model", os.path.join(export_dir, "1")]) == 2
    assert "is a SavedModel version itself; pass its parent directory" in error_line(capsys)


def test_an_export_whose_files_changed_is_refused(export_dir, tmp_path, capsys):
    copy = tmp_path / "tiny"
    shutil.copytree(export_dir, copy)
    with open(copy / "1" / "variables" / "variables.index", "ab") as f:
        f.write(b"\0")
    assert cli.main(["serve", "--model", str(copy)]) == 2
    assert "does not match its manifest.json (variables/variables.index has changed" in error_line(capsys)


def test_a_port_in_use_is_one_line_and_exit_code_2(export_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--model", export_dir, "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in error_line(capsys)


@pytest.mark.slow
def test_tfllm_serve_runs_until_sigterm_then_exits_cleanly(export_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "tfllm.cli", "serve", "--model", export_dir, "--port", "0", "--name", "served"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    try:
        line = process.stdout.readline()
        assert line.startswith("Serving served version 1"), process.stderr.read()[-2000:]
        url = line.split(" at ")[1].split(" ")[0]  # http://127.0.0.1:PORT/v1/models/served
        assert url.startswith("http://127.0.0.1:")
        # `score` runs in graph mode: no XLA compilation to wait for.
        status, body = request(url + ":predict", {"signature_name": "score", "instances": PROMPTS[:1]})
        assert status == 200 and body["predictions"][0]["num_tokens"] == len(PROMPTS[0])
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert stdout.splitlines()[-2:] == ["Stopping: finishing the requests in flight", "Stopped"]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


class Blocking:
    """A one-input signature that waits until released: a request kept in flight on purpose."""

    structured_input_signature = ((), {"texts": tf.TensorSpec([None], tf.string, name="texts")})

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, texts):
        self.entered.set()
        assert self.release.wait(30)
        return {"count": tf.size(texts)[None]}


def test_stopping_waits_for_the_requests_in_flight():
    blocking = Blocking()
    servable = Servable(name="slow", version=1, path="", signatures={"serving_default": blocking}, signature_defs={})
    server = ModelServer(servable, "127.0.0.1", 0, **LIMITS).start()
    answers = []
    client = threading.Thread(target=lambda: answers.append(
        request(f"{server.url}/v1/models/slow:predict", {"instances": ["a", "b"]})))
    client.start()
    assert blocking.entered.wait(30)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive() and not answers  # the server waits for the request in flight
    blocking.release.set()
    client.join(30)
    stopper.join(30)
    assert answers == [(200, {"predictions": [2]})] and not stopper.is_alive()


def test_a_saved_model_without_manifest_is_served_with_a_warning(export_dir, tmp_path, caplog):
    copy = tmp_path / "plain"
    shutil.copytree(export_dir, copy)
    os.remove(copy / "1" / "manifest.json")
    servable = load_servable(str(copy))
    assert servable.version == 1 and "generate" in servable.signatures
    assert "has no manifest.json: its files cannot be checked" in caplog.text

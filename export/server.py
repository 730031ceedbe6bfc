"""`tfllm serve`: the newest version of an export, behind TensorFlow Serving's REST API.

    tfllm serve --model exports/demo                     # http://127.0.0.1:8501/v1/models/demo
    curl http://127.0.0.1:8501/v1/models/demo/metadata
    curl -d '{"signature_name": "generate", "inputs": {"prompts": ["def f("], "max_new_tokens": 20,
              "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}}' \\
         http://127.0.0.1:8501/v1/models/demo:predict
    curl -d '{"signature_name": "classify", "instances": ["import os", "SELECT 1"]}' \\
         http://127.0.0.1:8501/v1/models/classifier:predict     # the export of a classify run
    curl http://127.0.0.1:8501/v1/models/demo/stats            # how generate requests were batched

Concurrent `generate` requests share signature calls (export/request_batcher.py): a worker thread
waits up to `--batch-timeout-ms` (default 5; 0 waits for nothing) for requests to merge, and
merges only those that one call answers exactly as it would answer each alone: greedy requests
with the same `max_new_tokens`, and sampled ones with a fresh seed (`seed` < 0) and the same
settings; a seeded sampled request runs alone. A merged call holds at most `--max-batch-size`
prompts and is padded to a power of two, so that XLA compiles few batch sizes. The calls of a
round run `--num-batch-threads` at a time (default: one per CPU core, 1 where a GPU is visible),
the largest halved while threads would idle and each half keeps 2 prompts. `--no-batching`
runs every request in a call of its own, as soon as it arrives. Other signatures are always
called directly. `GET .../stats` (also under `/versions/N`) answers a JSON object: `requests`
and `rows` (prompts) answered through the batcher, `batches` (signature calls),
`merged_batches` (calls of several requests), `mean_batch_requests`, `max_batch_requests`,
`mean_batch_rows`, `max_batch_rows`, `padding_rows`, `fallbacks` (merged calls that failed and
were rerun request by request), `queue_length`, `batch_requests_histogram` (requests per call:
calls), `recent_batches` (the last 50 calls) and the settings. Each call is logged at DEBUG.

`--api-key-file` makes every route require `Authorization: Bearer KEY`; binding an address other
than loopback needs one, or `--insecure`. `--tls-cert`/`--tls-key` serve HTTPS. Every request
gets one access-log line on stderr or in `--access-log FILE`, its texts only with
`--log-prompts` (export/access.py).

The SavedModel is loaded with `tf.saved_model.load` alone, as TF Serving loads it: this module
imports TensorFlow, tensorflow-text (whose ops the tokenizer uses), Werkzeug's HTTP server and
`tfllm.errors`, never tfllm's model, tokenizer or sampler code. Before serving, the version's
files are checked against its manifest (a version without one is served with a warning). An
encrypted export is opened in memory with `--encrypt-key-file` (export/encrypted_export.py,
which adds `cryptography` and nothing of tfllm's model code).
SIGTERM or Ctrl-C stops accepting connections, lets the requests in flight finish, queued ones
included (up to `SHUTDOWN_GRACE_SECONDS`), ends the batcher's thread and exits with status 0.
"""

import dataclasses
import logging
import os
import signal
import socket
import threading

import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tensorflow-text ops the tokenizer graph uses
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from werkzeug.serving import make_server

from tfllm.export.access import Access, AccessControl, RequestHandler, serve_tls
from tfllm.export.encrypted_export import load_saved_model
from tfllm.manifest import MANIFEST_FILENAME, read_manifest, verify_manifest
from tfllm.export.request_batcher import default_batch_threads
from tfllm.export.rest_api import RestApi
from tfllm.errors import UserError

SHUTDOWN_GRACE_SECONDS = 30.0

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Servable:
    """A loaded SavedModel version: what `RestApi` serves.

    `root` is the loaded object itself: the signatures read variables it owns, so it must live
    as long as they do.
    """

    name: str
    version: int
    path: str
    signatures: dict
    signature_defs: dict
    root: object = None


def run(args):
    access = Access.from_args(args)  # flags that cannot be honored answer before the model loads
    servable = load_servable(args.model, args.name, getattr(args, "encrypt_key_file", None))
    server = ModelServer(servable, args.host, args.port, max_body_bytes=args.max_body_bytes,
                         max_batch_size=args.max_batch_size, max_new_tokens=args.max_new_tokens,
                         batch_timeout_ms=args.batch_timeout_ms, batching=not args.no_batching,
                         batch_threads=args.num_batch_threads or default_batch_threads(), access=access)
    with access, server:
        print(f"Serving {servable.name} version {servable.version} from {servable.path} at "
              f"{server.url}/v1/models/{servable.name} (SIGTERM or Ctrl-C stops)", flush=True)
        wait_for_stop_signal()
        print("Stopping: finishing the requests in flight", flush=True)
    print("Stopped", flush=True)


def latest_version(base):
    """The newest version number under an export dir; `UserError` when it holds none."""
    if not os.path.isdir(base):
        raise UserError(f"--model {base} is not a directory; pass the --out dir of `tfllm export`")
    versions = [int(name) for name in os.listdir(base)
                if name.isdigit() and os.path.isfile(os.path.join(base, name, "saved_model.pb"))]
    if versions:
        return max(versions)
    if os.path.isfile(os.path.join(base, "saved_model.pb")):
        raise UserError(f"--model {base} is a SavedModel version itself; pass its parent directory, "
                        "which holds the numbered versions")
    raise UserError(f"--model {base} holds no SavedModel (no {base}/<version>/saved_model.pb); "
                    f"write one with `tfllm export --run-dir RUN --out {base}`")


def load_servable(base, name=None, key_file=None):
    """Loads the newest version under `base` after checking its files against the manifest."""
    base = os.path.abspath(base)
    version = latest_version(base)
    path = os.path.join(base, str(version))
    if read_manifest(path) is None:
        logger.warning("%s has no %s: its files cannot be checked", path, MANIFEST_FILENAME)
    else:
        problems = verify_manifest(path)
        if problems:
            raise UserError(f"{path} does not match its {MANIFEST_FILENAME} ({'; '.join(problems[:3])}); "
                            "export it again with `tfllm export --force`")
    try:
        loaded = load_saved_model(path, key_file)  # an encrypted export is opened in memory
    except (OSError, ValueError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load the SavedModel {path}: {first_line}") from None
    return Servable(
        name=name or os.path.basename(base),
        version=version,
        path=path,
        signatures={key: loaded.signatures[key] for key in loaded.signatures},
        signature_defs=signature_defs_json(path),
        root=loaded,
    )


def signature_defs_json(path):
    """The signature definitions of `path/saved_model.pb` as TF Serving's metadata shows them."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as file:
        saved_model.ParseFromString(file.read())
    signature_defs = saved_model.meta_graphs[0].signature_def
    return {
        key: json_format.MessageToDict(
            signature_defs[key], preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for key in sorted(signature_defs)
    }


class ModelServer:
    """A threaded HTTP server around `RestApi`, started in the background and stopped gracefully.

    Args:
        servable: a `Servable`.
        host: str. The address to bind; 127.0.0.1 accepts local clients only.
        port: int. The port to bind; 0 picks a free one (see `port`).
        access: an `Access` (export/access.py): API keys, TLS, the access log. Defaults to
            anyone over HTTP, logged on stderr.
        **limits: `max_body_bytes`, `max_batch_size`, `max_new_tokens`, `batch_timeout_ms`,
            `batching`, `batch_threads`; see `RestApi`.

    Example:
    ```python
    with ModelServer(load_servable("exports/demo"), "127.0.0.1", 0, max_body_bytes=1 << 20,
                     max_batch_size=32, max_new_tokens=256) as server:
        requests.get(f"{server.url}/v1/models/demo")
    ```
    """

    def __init__(self, servable, host, port, access=None, **limits):
        try:
            self.app = RestApi(servable, **limits)
        except ValueError as error:
            raise UserError(f"{error}; pass positive limits to `tfllm serve`") from None
        self.access = access or Access()
        listener = listen(host, port)
        try:
            self._server = make_server(host, port, AccessControl(self.app, self.access), threaded=True,
                                       request_handler=RequestHandler, fd=listener.fileno())
        finally:
            listener.close()  # the server holds its own duplicate
        if self.access.ssl_context is not None:
            serve_tls(self._server, self.access.ssl_context)
        self.host = host
        self.port = self._server.port
        self._thread = None

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "http" if self.access.ssl_context is None else "https"
        return f"{scheme}://{host}:{self.port}"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, name="model-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace_seconds=SHUTDOWN_GRACE_SECONDS):
        """Stops accepting connections, waits for the requests in flight (queued ones included),
        ends the batcher's thread and closes the socket."""
        self._server.shutdown()
        idle = self.app.wait_idle(grace_seconds)
        if not idle:
            logger.warning("requests still running after %.0f s are abandoned", grace_seconds)
        self.app.close(timeout=None if idle else 0)
        self._server.server_close()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def listen(host, port):
    """A listening socket on `host:port`; `UserError` when the address cannot be bound.

    Bound here rather than by Werkzeug, which answers a taken port with `sys.exit(1)`.
    """
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, protocol)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror}; pass another --host") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(socket.SOMAXCONN)
    except OSError as error:
        listener.close()
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror}; pick another --host or --port") from None
    return listener


def wait_for_stop_signal():
    """Blocks the main thread until SIGTERM or SIGINT arrives."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # A timed wait lets the main thread run the signal handler promptly on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

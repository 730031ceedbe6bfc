"""TensorFlow Serving's REST API for one loaded SavedModel, as a WSGI application.

Requests, answers and error statuses follow TF Serving's REST API, so a client written against
`tfllm serve` works unchanged against the `tensorflow/serving` container:

    GET  /v1/models/NAME[/versions/N]             version status
    GET  /v1/models/NAME[/versions/N]/metadata    signature definitions
    GET  /v1/models/NAME[/versions/N]/stats       `generate` batching statistics (tfllm only)
    POST /v1/models/NAME[/versions/N]:predict     {"signature_name": ..., "instances": [...]}
                                                  or {"signature_name": ..., "inputs": {...}}

Row requests (`instances`) are answered with `predictions`, one entry per row; columnar requests
(`inputs`) with `outputs`. Every error is `{"error": "..."}` with status 400 (bad request),
404 (unknown model, version or path) or 413 (body too large). A signature's scalar inputs, such
as `generate`'s `max_new_tokens`, can only be sent in the columnar format: the row format stacks
every input along a batch axis, in TF Serving as here. Nothing here depends on a signature's
name: `generate`, `score` and a classifier's `classify` (texts in, labels and probabilities out,
every output batch-major so that rows can be answered) are served alike, and the limits apply to
whichever inputs a signature has. A signature that takes `generate`'s inputs runs through a
`RequestBatcher`, which merges concurrent requests into shared calls where that leaves every
answer unchanged (export/request_batcher.py). This module needs only TensorFlow and Werkzeug.
"""

import functools
import json
import logging
import re
import threading

import tensorflow as tf
from werkzeug.wrappers import Request, Response

from tfllm.export.json_tensors import JsonTensorError, arrays_from_inputs, arrays_from_instances, columns_of, rows_of
from tfllm.export.request_batcher import DEFAULT_TIMEOUT_MS, RequestBatcher, is_generate

DEFAULT_SIGNATURE = "serving_default"
# The WSGI environ key under which a parsed predict request is left for the access log
# (export/access.py), which shows its texts with `--log-prompts`.
REQUEST_DOCUMENT = "tfllm.request_document"
# An oversized body is read and dropped up to this size before the 413 answer, so that the
# client, still sending, is not reset before it reads the answer; beyond it the connection closes.
DRAIN_LIMIT_BYTES = 16 << 20

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|/stats|:predict|:classify|:regress)?$"
)

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than 200: its HTTP status and the message of its `{"error": ...}` body."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class RestApi:
    """A WSGI application with TensorFlow Serving's REST API for one servable.

    Limits are checked before any model work: the body size before the body is read, the
    batch size (the leading dimension of every input of unknown batch size) and a
    `max_new_tokens` input, for the signatures that take one, before the signature runs.
    Requests may run concurrently; the application counts those in flight so that a server
    can wait for them before it stops, and `close()` ends the batcher's worker thread.

    Args:
        servable: what the server loaded: `name` (str), `version` (int), `signatures` (dict of
            signature key to a loaded concrete function) and `signature_defs` (the JSON of the
            SavedModel's signature definitions, as TF Serving's metadata shows them).
        max_body_bytes: int. The largest request body accepted.
        max_batch_size: int. The most rows a request may hold.
        max_new_tokens: int. The largest `max_new_tokens` input accepted.
        batch_timeout_ms: int >= 0. How long the batcher, once free, waits for more
            `generate` requests to share a call. Defaults to `DEFAULT_TIMEOUT_MS`.
        batching: bool. False runs every request in a call of its own. Defaults to True.
        batch_threads: int >= 1. How many merged calls run at once. Defaults to 1.

    Example:
    ```python
    app = RestApi(servable, max_body_bytes=1 << 20, max_batch_size=32, max_new_tokens=256)
    werkzeug.serving.make_server("127.0.0.1", 8501, app, threaded=True).serve_forever()
    ```
    """

    def __init__(self, servable, max_body_bytes, max_batch_size, max_new_tokens, batch_timeout_ms=DEFAULT_TIMEOUT_MS,
                 batching=True, batch_threads=1):
        for arg_name, value in (("max_body_bytes", max_body_bytes), ("max_batch_size", max_batch_size),
                                ("max_new_tokens", max_new_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg_name} must be a positive integer. Received: {arg_name}={value!r}")
        self.servable = servable
        self.max_body_bytes = max_body_bytes
        self.max_batch_size = max_batch_size
        self.max_new_tokens = max_new_tokens
        self.batcher = RequestBatcher(max_batch_size, batch_timeout_ms, batching=batching, batch_threads=batch_threads)
        self._active = 0
        self._idle = threading.Condition()

    def __call__(self, environ, start_response):
        with self._idle:
            self._active += 1
        try:
            response = self.respond(Request(environ))
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
        return response(environ, start_response)

    def wait_idle(self, timeout):
        """Waits until no request is in flight; False if some still are after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def close(self, timeout=None):
        """Answers the queued `generate` requests and ends the batcher's thread; False if it still
        runs after `timeout` seconds."""
        return self.batcher.stop(timeout)

    def respond(self, request):
        try:
            return json_response(200, self.dispatch(request))
        except ApiError as error:
            response = json_response(error.status, {"error": error.message})
            if error.status == 413:
                # The rest of an oversized body may still be on its way: end the connection.
                response.headers["Connection"] = "close"
            return response
        except Exception as error:  # noqa: BLE001  a bug must still answer JSON, and be logged
            logger.exception("request %s %s failed", request.method, request.path)
            return json_response(500, {"error": f"internal error: {type(error).__name__}: {error}"})

    def dispatch(self, request):
        match = _PATH.match(request.path)
        suffix = (match["suffix"] or "") if match else None
        method = "GET" if suffix in ("", "/metadata", "/stats") else "POST"
        if match is None or request.method != method:
            raise ApiError(404, f"Malformed request: {request.method} {request.path}")
        self.check_servable(match["name"], match["version"], match["label"])
        if suffix == "":
            return self.status()
        if suffix == "/metadata":
            return self.metadata()
        if suffix == "/stats":
            return self.batcher.stats()
        if suffix != ":predict":
            # TF Serving's :classify takes tf.Example protos; a `classify` signature that takes
            # texts is a predict signature, called through :predict like any other.
            hint = ' with "signature_name": "classify"' if "classify" in self.servable.signatures else ""
            raise ApiError(400, f"{suffix[1:]} needs a classification or regression signature; "
                                f"this model has predict signatures only: use :predict{hint}")
        document = self.read_json(request)
        request.environ[REQUEST_DOCUMENT] = document
        return self.predict(document)

    def check_servable(self, name, version, label):
        if name != self.servable.name:
            where = f"Specific({name}, {version})" if version else f"Latest({name})"
            raise ApiError(404, f"Servable not found for request: {where}")
        if label is not None:
            raise ApiError(404, f"Unrecognized servable version label: {label}")
        if version is not None and int(version) != self.servable.version:
            raise ApiError(404, f"Servable not found for request: Specific({name}, {version})")

    def status(self):
        version = {"version": str(self.servable.version), "state": "AVAILABLE",
                   "status": {"error_code": "OK", "error_message": ""}}
        return {"model_version_status": [version]}

    def metadata(self):
        return {
            "model_spec": {"name": self.servable.name, "signature_name": "", "version": str(self.servable.version)},
            "metadata": {"signature_def": {"signature_def": self.servable.signature_defs}},
        }

    def read_json(self, request):
        """The request body parsed as a JSON object; 413 before reading a body over the limit."""
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            discard(request.stream, length)
            raise ApiError(413, self.too_large(length))
        body = request.stream.read(self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            discard(request.stream, DRAIN_LIMIT_BYTES)
            raise ApiError(413, self.too_large(f"more than {self.max_body_bytes}"))
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, f"JSON Parse error: {error}") from None
        except RecursionError:  # arrays or objects nested a few thousand deep
            raise ApiError(400, "JSON Parse error: the document is nested too deeply") from None
        if not isinstance(document, dict):
            raise ApiError(400, f"JSON Value: {body[:80]!r} Is not object")
        return document

    def too_large(self, length):
        return (f"request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes "
                "(--max-body-bytes); send fewer or shorter rows per request")

    def predict(self, document):
        signature_name = document.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(signature_name, str):
            raise ApiError(400, "'signature_name' key must be a string value.")
        function = self.servable.signatures.get(signature_name)
        if function is None:
            raise ApiError(400, f'Serving signature key "{signature_name}" not found.')
        specs = function.structured_input_signature[1]
        if "instances" in document and "inputs" in document:
            raise ApiError(400, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
        if "instances" not in document and "inputs" not in document:
            raise ApiError(400, "Missing 'inputs' or 'instances' key")
        try:
            if "instances" in document:
                arrays = arrays_from_instances(document["instances"], specs)
            else:
                arrays = arrays_from_inputs(document["inputs"], specs)
        except JsonTensorError as error:
            raise ApiError(400, str(error)) from None
        except (ValueError, OverflowError, RecursionError) as error:
            # Valid JSON that no tensor holds: a lone surrogate in a string, an integer beyond
            # the float range, lists nested deeper than NumPy's 64 dimensions.
            key = "instances" if "instances" in document else "inputs"
            raise ApiError(400, f"'{key}' cannot be converted to the signature's tensors: "
                                f"{type(error).__name__}: {error}") from None
        self.check_limits(arrays, specs)
        call = functools.partial(call_signature, function, specs)
        try:
            if is_generate(specs):
                outputs = self.batcher.run(signature_name, call, arrays)
            else:
                outputs = call(arrays)
        except tf.errors.InvalidArgumentError as error:
            raise ApiError(400, graph_error_message(error)) from None
        except tf.errors.OpError as error:
            raise ApiError(500, graph_error_message(error)) from None
        try:
            if "instances" in document:
                return {"predictions": rows_of(outputs)}
            return {"outputs": columns_of(outputs)}
        except JsonTensorError as error:
            raise ApiError(400, str(error)) from None

    def check_limits(self, arrays, specs):
        for name, spec in specs.items():
            rows = arrays[name].shape[0] if arrays[name].ndim else None
            if spec.shape.rank and spec.shape[0] is None and rows > self.max_batch_size:
                raise ApiError(400, f"input '{name}' holds {rows} rows, more than this server's limit of "
                                    f"{self.max_batch_size} (--max-batch-size); split the request")
        requested = arrays.get("max_new_tokens")
        if requested is not None and requested.size == 1 and int(requested.item()) > self.max_new_tokens:
            raise ApiError(400, f"max_new_tokens={int(requested.item())} exceeds this server's limit of "
                                f"{self.max_new_tokens} (--max-new-tokens)")


def call_signature(function, specs, arrays):
    """The outputs of a signature run on NumPy `arrays`, as NumPy arrays."""
    outputs = function(**{name: tf.constant(array, specs[name].dtype) for name, array in arrays.items()})
    return {name: tensor.numpy() for name, tensor in outputs.items()}


def json_response(status, body):
    try:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # A message that quotes a lone surrogate from the request has no UTF-8 form; escaped
        # JSON is ASCII and parses to the same value.
        data = json.dumps(body).encode("ascii")
    return Response(data, status=status, content_type="application/json")


def discard(stream, length):
    """Reads and drops up to `min(length, DRAIN_LIMIT_BYTES)` bytes of `stream`."""
    left = min(length, DRAIN_LIMIT_BYTES)
    while left > 0:
        chunk = stream.read(min(left, 1 << 16))
        if not chunk:
            return
        left -= len(chunk)


def graph_error_message(error):
    """The one useful line of a failed signature run: an assertion's text and values, joined."""
    match = re.search(r"assertion failed: (.*)", error.message)
    if match:
        return " ".join(re.findall(r"\[([^\[\]]*)\]", match.group(1)))
    return error.message.strip().splitlines()[0]

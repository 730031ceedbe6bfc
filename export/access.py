"""Who may call `tfllm serve`, over what, and one access-log line per request.

    tfllm serve --model exports/demo --api-key-file key.txt          # every route needs the key
    curl -H "Authorization: Bearer $(cat key.txt)" http://127.0.0.1:8501/v1/models/demo
    tfllm serve --model exports/demo --host 0.0.0.0 --api-key-file key.txt \\
        --tls-cert cert.pem --tls-key key.pem --access-log access.log

With `--api-key-file`, every request (any method, any path, known or not) must carry
`Authorization: Bearer KEY` with one of the file's keys (one per line); any other request is
answered 401 with `{"error": ...}` and `WWW-Authenticate: Bearer`, before the model sees it. Keys
are compared as SHA-256 digests with `hmac.compare_digest`, so the time an answer takes tells
neither a key's characters nor its length. Binding an address other machines can reach without
a key is refused unless `--insecure` is given. `--tls-cert`/`--tls-key` serve HTTPS; the
handshake runs in the connection's own thread, so a client that stalls it holds no other up.

Each request answered gets one line on stderr (or `--access-log FILE`), in place of Werkzeug's:

    2026-01-31T12:00:00.123Z 127.0.0.1 POST /v1/models/demo:predict 200 41.7ms

(time of arrival, ISO 8601 UTC; client address; method; path, percent-encoded; status; time to
answer). The request's texts are added, truncated, only with `--log-prompts`:
`... 200 41.7ms prompts=["def f(", ""]`. Keys never appear in a log line or an error.
"""

import datetime
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Response

from tfllm.errors import UserError
from tfllm.export.rest_api import REQUEST_DOCUMENT
from tfllm.files import read_user_file

# A key a client can send in one header: printable ASCII, no spaces (RFC 6750's token68 and more).
_KEY = re.compile(r"[\x21-\x7e]+")
# Exactly "Bearer KEY": one space, one token. The scheme is case-insensitive (RFC 7235).
_BEARER = re.compile(r"Bearer ([\x21-\x7e]+)", re.IGNORECASE)
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
PROMPT_LOG_CHARS = 200
PROMPT_LOG_COUNT = 8
ROUTE_LOG_CHARS = 512
# A connection idle this long is dropped: with TLS, a stalled handshake would otherwise hold
# its thread for good.
CONNECTION_TIMEOUT_SECONDS = 120

logger = logging.getLogger(__name__)


class Access:
    """What `ModelServer` checks and logs around its `RestApi`; the default lets anyone in over
    HTTP and logs on stderr.

    Args:
        key_digests: tuple of SHA-256 digests (bytes) of the accepted API keys; empty: no key needed.
        ssl_context: an `ssl.SSLContext` to serve HTTPS with, or None for HTTP.
        access_log: str. The file access lines are appended to (opened at the first line, closed
            by `close()`); None: stderr.
        log_prompts: bool. Whether access lines show the texts of a request, truncated.

    Example:
    ```python
    with Access(key_digests=read_api_keys("key.txt"), access_log="access.log") as access:
        with ModelServer(servable, "0.0.0.0", 8501, access=access, **limits) as server:
            ...
    ```
    """

    def __init__(self, key_digests=(), ssl_context=None, access_log=None, log_prompts=False):
        self.key_digests = tuple(key_digests)
        self.ssl_context = ssl_context
        self.access_log = access_log
        self.log_prompts = log_prompts
        self._stream = None
        self._lock = threading.Lock()

    @classmethod
    def from_args(cls, args):
        """The access of `tfllm serve`'s flags; a `UserError` for any that cannot be honored, before
        the model is loaded."""
        key_digests = read_api_keys(args.api_key_file) if args.api_key_file else ()
        check_exposure(args.host, bool(key_digests), args.insecure, tls=bool(args.tls_cert))
        ssl_context = tls_context(args.tls_cert, args.tls_key)
        if args.access_log:
            try:
                open(args.access_log, "a", encoding="utf-8").close()
            except OSError as error:
                raise UserError(f"cannot open --access-log {args.access_log}: {error.strerror}; "
                                "pass a writable file") from None
        return cls(key_digests, ssl_context, args.access_log, args.log_prompts)

    def close(self):
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def refusal(self, authorization):
        """Why a request with this `Authorization` header (None: absent) is refused; None when it may pass."""
        if not self.key_digests:
            return None
        if authorization is None:
            return "missing Authorization header; send 'Authorization: Bearer KEY' with a key of --api-key-file"
        match = _BEARER.fullmatch(authorization)
        if match is None:
            return "malformed Authorization header; send 'Authorization: Bearer KEY' with a key of --api-key-file"
        digest = hashlib.sha256(match[1].encode("ascii")).digest()
        accepted = False
        for key_digest in self.key_digests:  # every key, so that the time taken tells none of them
            accepted |= hmac.compare_digest(digest, key_digest)
        return None if accepted else "invalid API key"

    def log(self, started, client, method, path, status, seconds=None, document=None):
        """Writes one access line; a failed write is reported, never raised into a request."""
        when = datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
        latency = "-" if seconds is None else f"{seconds * 1000:.1f}ms"
        line = (f"{when.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z {client or '-'} {printable(method)} "
                f"{printable(path)[:ROUTE_LOG_CHARS]} {status} {latency}")
        if self.log_prompts and document is not None:
            texts = request_texts(document, PROMPT_LOG_COUNT + 1)
            shown = [text if len(text) <= PROMPT_LOG_CHARS else text[:PROMPT_LOG_CHARS] + "..."
                     for text in texts[:PROMPT_LOG_COUNT]]
            # ASCII JSON escapes every line break, so that a prompt cannot forge log lines.
            line += f" prompts={json.dumps(shown)}" + (" (and more)" if len(texts) > PROMPT_LOG_COUNT else "")
        try:
            with self._lock:
                if self.access_log is None:
                    stream = sys.stderr
                else:
                    if self._stream is None:
                        self._stream = open(self.access_log, "a", encoding="utf-8")
                    stream = self._stream
                stream.write(line + "\n")
                stream.flush()
        except (OSError, ValueError) as error:  # a full disk, a closed stderr
            logger.warning("cannot write the access log: %s", error)


class AccessControl:
    """A WSGI middleware: refuses requests without a valid key (401), logs every request it answers.

    Args:
        app: the WSGI application to guard, a `RestApi`.
        access: an `Access`.
    """

    def __init__(self, app, access):
        self.app = app
        self.access = access

    def __call__(self, environ, start_response):
        started, clock = time.time(), time.perf_counter()
        status = []

        def record(status_line, headers, exc_info=None):
            status[:] = [int(status_line.split(None, 1)[0])]
            return start_response(status_line, headers, exc_info)

        refusal = self.access.refusal(environ.get("HTTP_AUTHORIZATION"))
        try:
            if refusal is None:
                return self.app(environ, record)
            return unauthorized(refusal)(environ, record)
        finally:
            # Logged once the answer is ready, before it is sent: `RestApi` answers whole bodies.
            self.access.log(started, environ.get("REMOTE_ADDR"), environ.get("REQUEST_METHOD"), request_path(environ),
                            status[0] if status else 500, time.perf_counter() - clock, environ.get(REQUEST_DOCUMENT))


class RequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler without its own request log: `AccessControl` logs the requests
    that reach the application, and this handler the few Werkzeug answers alone (a malformed
    request line), in the same format."""

    timeout = CONNECTION_TIMEOUT_SECONDS

    def log_request(self, code="-", size="-"):
        if getattr(self, "environ", None) is not None:
            return  # the application answered it, and logged it
        access = getattr(self.server.app, "access", None)
        if access is not None:
            access.log(time.time(), self.client_address[0] if self.client_address else None,
                       getattr(self, "command", None) or "-", getattr(self, "path", None) or "-", int(code))

    def log(self, type, message, *args):
        # Client errors (a failed TLS handshake, a malformed request) are no server fault.
        logger.info("connection from %s: %s", self.address_string(), message % args if args else message)


def serve_tls(server, ssl_context):
    """Makes a Werkzeug `server` speak HTTPS, the handshake deferred to each connection's thread.

    Werkzeug wraps the listening socket with the handshake done in `accept`, on the thread that
    accepts every connection: one client that stalls the handshake would stall them all.
    """
    server.socket = ssl_context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.ssl_context = ssl_context


def unauthorized(message):
    response = Response(json.dumps({"error": message}), status=401, content_type="application/json")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def request_path(environ):
    """The path the client sent, still percent-encoded, without its query."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    return raw.split("?", 1)[0]


def printable(text):
    """`text` with every space or unprintable character percent-encoded: one field of a log line."""
    # WSGI strings hold the request's bytes as Latin-1 characters.
    return _UNPRINTABLE.sub(lambda match: "".join(f"%{byte:02X}" for byte in match[0].encode("latin-1", "replace")),
                            text or "-")


def request_texts(document, limit):
    """Up to `limit` strings of a predict request's `instances` or `inputs`, in order."""
    texts, stack, visited = [], [document.get(key) for key in ("inputs", "instances")], 0
    while stack and len(texts) < limit and visited < 100_000:
        value = stack.pop()
        visited += 1
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
    return texts


def read_api_keys(path):
    """SHA-256 digests of the keys in `path`, one per line (blank lines ignored); a `UserError`
    naming the file, never a key, when there are none or one cannot be sent in a header."""
    lines = read_user_file(path, "--api-key-file", "pass a file that holds one key per line, in printable ASCII"
                           ).splitlines()
    digests = []
    for number, line in enumerate(lines, 1):
        key = line.strip()
        if not key:
            continue
        if not _KEY.fullmatch(key):
            raise UserError(f"--api-key-file {path}: line {number} holds spaces or characters other than printable "
                            "ASCII, which an Authorization header cannot carry; write one key per line")
        digests.append(hashlib.sha256(key.encode("ascii")).digest())
    if not digests:
        raise UserError(f"--api-key-file {path} holds no key; write one key per line, for example with "
                        "`python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE`")
    if os.name == "posix" and os.stat(path).st_mode & 0o077:
        logger.warning("--api-key-file %s can be read by other users; `chmod 600` it", path)
    return tuple(digests)


def is_loopback(host):
    """Whether `host` (an address or a name) is a loopback address: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            # The address `listen` binds: the first that the name resolves to.
            address = ipaddress.ip_address(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
        except (OSError, ValueError) as error:
            raise UserError(f"cannot resolve --host {host}: {getattr(error, 'strerror', error)}; "
                            "pass an address such as 127.0.0.1") from None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_exposure(host, has_keys, insecure, tls=False):
    """Refuses to let other machines use the model without a key, unless told to (`insecure`)."""
    if is_loopback(host):
        return
    if not has_keys and not insecure:
        raise UserError(f"--host {host} accepts connections from other machines and no --api-key-file is given, "
                        "so anyone who reaches the port could use the model; pass --api-key-file FILE, bind "
                        "127.0.0.1, or pass --insecure to serve without a key")
    if not has_keys:
        logger.warning("serving on --host %s without an API key (--insecure): anyone who reaches it can use the model",
                       host)
    elif not tls:
        logger.warning("serving on --host %s over plain HTTP: API keys cross the network readable; "
                       "pass --tls-cert and --tls-key", host)


def tls_context(cert_file, key_file):
    """An `ssl.SSLContext` serving `cert_file` with `key_file`, None when neither is given; a
    `UserError` when only one is, when one cannot be read, or when they are not a pair."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        given, missing = ("--tls-cert", "--tls-key") if key_file is None else ("--tls-key", "--tls-cert")
        raise UserError(f"{given} needs {missing}: pass both, a certificate and its private key, or neither")
    for flag, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise UserError(f"cannot read {flag} {path}: {error.strerror}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    encrypted = []

    def no_password():
        # OpenSSL would otherwise ask for the password on the terminal.
        encrypted.append(True)
        return b""

    try:
        context.load_cert_chain(cert_file, key_file, password=no_password)
    except ssl.SSLError as error:
        if encrypted:
            raise UserError(f"--tls-key {key_file} is encrypted; write it unencrypted, readable by this user only "
                            f"(`openssl pkey -in {key_file} -out KEY`)") from None
        raise UserError(f"--tls-cert {cert_file} and --tls-key {key_file} are not a PEM certificate and its "
                        f"private key ({error.reason or error}); pass a matching pair") from None
    return context

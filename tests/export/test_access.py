"""`tfllm serve`'s access: API keys on every route, loopback unless told otherwise, TLS, the access log."""

import base64
import datetime
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.test import Client

from tfllm import cli
from tfllm.export import server as server_module
from tfllm.export.access import Access, AccessControl, check_exposure, read_api_keys, tls_context
from tfllm.export.rest_api import RestApi
from tfllm.export.server import ModelServer, load_servable

LIMITS = {"max_body_bytes": 4096, "max_batch_size": 4, "max_new_tokens": 8}
KEY, OTHER_KEY = "k3y-0f-the-t3st.~+/=", "second_key"
SECRET_PROMPT = "def secret_prompt_xyzzy("
# Every route the server has, and some it has not: a key is needed before any of them answers.
ROUTES = [
    ("GET", "/v1/models/tiny"),
    ("GET", "/v1/models/tiny/versions/1"),
    ("GET", "/v1/models/tiny/metadata"),
    ("GET", "/v1/models/tiny/versions/1/metadata"),
    ("GET", "/v1/models/tiny/stats"),
    ("GET", "/v1/models/tiny/versions/1/stats"),
    ("POST", "/v1/models/tiny:predict"),
    ("POST", "/v1/models/tiny/versions/1:predict"),
    ("POST", "/v1/models/tiny:classify"),
    ("POST", "/v1/models/tiny:regress"),
    ("GET", "/v1/models/other"),
    ("GET", "/v1/models/tiny/labels/stable"),
    ("GET", "/"),
    ("GET", "/no/such/route"),
    ("PUT", "/v1/models/tiny"),
    ("DELETE", "/v1/models/tiny"),
    ("OPTIONS", "/v1/models/tiny:predict"),
]
BAD_HEADERS = {
    "missing": None,
    "empty": "",
    "scheme only": "Bearer",
    "empty token": "Bearer ",
    "two spaces": f"Bearer  {KEY}",
    "tab": f"Bearer\t{KEY}",
    "key alone": KEY,
    "basic scheme": "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode(),
    "token scheme": f"Token {KEY}",
    "two tokens": f"Bearer {KEY} {KEY}",
    "wrong key": "Bearer not-the-key",
    "key prefix": f"Bearer {KEY[:-1]}",
    "key and more": f"Bearer {KEY}x",
    "keys joined": f"Bearer {KEY}{OTHER_KEY}",
}
SCORE = {"signature_name": "score", "instances": [SECRET_PROMPT]}
LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) (\S+) (\S+) (\d{3}) (\d+\.\d)ms(.*)")


@pytest.fixture(scope="module")
def servable(export_dir):
    return load_servable(export_dir)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api_keys.txt"
    path.write_text(f"\n  {KEY}  \n\n{OTHER_KEY}\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost, its key, and another key."""
    directory = tmp_path_factory.mktemp("tls")
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).add_extension(san, critical=False)
            .sign(key, hashes.SHA256()))
    files = {"cert": directory / "cert.pem", "key": directory / "key.pem", "other_key": directory / "other.pem",
             "encrypted_key": directory / "encrypted.pem"}
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path, private, encryption in ((files["key"], key, serialization.NoEncryption()),
                                      (files["other_key"], other, serialization.NoEncryption()),
                                      (files["encrypted_key"], key, serialization.BestAvailableEncryption(b"pw"))):
        path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               encryption))
    return {name: str(path) for name, path in files.items()}


def start(servable, tmp_path_factory, **access):
    log = str(tmp_path_factory.mktemp("log") / "access.log")
    return ModelServer(servable, "127.0.0.1", 0, access=Access(access_log=log, **access), **LIMITS).start(), log


@pytest.fixture(scope="module")
def keyed(servable, key_file, tmp_path_factory):
    """(server, access log path): a key on every route, prompts never logged."""
    server, log = start(servable, tmp_path_factory, key_digests=read_api_keys(key_file))
    yield server, log
    server.stop()
    server.access.close()


@pytest.fixture(scope="module")
def prompts_logged(servable, tmp_path_factory):
    server, log = start(servable, tmp_path_factory, log_prompts=True)
    yield server, log
    server.stop()
    server.access.close()


@pytest.fixture(scope="module")
def https(servable, key_file, tls_files, tmp_path_factory):
    server, _ = start(servable, tmp_path_factory, key_digests=read_api_keys(key_file),
                      ssl_context=tls_context(tls_files["cert"], tls_files["key"]))
    yield server
    server.stop()
    server.access.close()


def call(server, method, path, authorization=None, body=None, context=None):
    """(status, headers, JSON answer) of one request; `body` a dict, bytes or None."""
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=60, context=context)
    headers = {} if authorization is None else {"Authorization": authorization}
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    if method == "POST" and data is None:
        data = b"{}"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        connection.close()


def log_lines(path):
    if not os.path.exists(path):  # opened at its first line
        return []
    with open(path, encoding="utf-8") as file:
        return file.read().splitlines()


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("tfllm serve: error: "), err
    return err


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_refuses_a_missing_malformed_or_wrong_key(keyed, method, path, header):
    status, headers, body = call(keyed[0], method, path, header, SCORE if method == "POST" else None)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert headers["Content-Type"] == "application/json" and body["error"]
    assert KEY not in json.dumps(body)


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_answers_with_either_key_as_without_keys(keyed, method, path):
    status, _, body = call(keyed[0], method, path, f"Bearer {KEY}", SCORE if method == "POST" else None)
    assert status != 401
    client = Client(keyed[0].app)  # the same application, unguarded
    unguarded = client.open(path, method=method, data=json.dumps(SCORE) if method == "POST" else None)
    if not path.endswith("/stats"):  # the statistics count the requests above
        assert (status, body) == (unguarded.status_code, unguarded.get_json())
    assert call(keyed[0], method, path, f"bearer {OTHER_KEY}", SCORE if method == "POST" else None)[0] == status


def test_a_refused_post_with_a_large_body_still_gets_its_401(keyed):
    status, _, body = call(keyed[0], "POST", "/v1/models/tiny:predict", "Bearer wrong", b"x" * (1 << 20))
    assert (status, body) == (401, {"error": "invalid API key"})


def test_the_access_log_has_one_line_per_request_without_keys_or_prompts(keyed, caplog):
    server, log = keyed
    before = len(log_lines(log))
    with caplog.at_level(logging.DEBUG, logger="werkzeug"):
        answers = [call(server, "POST", "/v1/models/tiny:predict", f"Bearer {KEY}", SCORE)[0],
                   call(server, "GET", "/v1/models/tiny/metadata", "Bearer wrong")[0],
                   call(server, "GET", "/v1/models/nothing%20here?q=1", f"Bearer {KEY}")[0]]
    assert answers == [200, 401, 404]
    assert not [record for record in caplog.records if record.name == "werkzeug"]  # Werkzeug's own log is off
    lines = log_lines(log)[before:]
    assert len(lines) == 3
    fields = [LINE.fullmatch(line).groups() for line in lines]
    assert [(f[1], f[2], f[3], f[4], f[6]) for f in fields] == [
        ("127.0.0.1", "POST", "/v1/models/tiny:predict", "200", ""),
        ("127.0.0.1", "GET", "/v1/models/tiny/metadata", "401", ""),
        ("127.0.0.1", "GET", "/v1/models/nothing%20here", "404", ""),
    ]
    arrived = datetime.datetime.strptime(fields[0][0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - arrived) < datetime.timedelta(minutes=5)
    text = "\n".join(log_lines(log))
    assert SECRET_PROMPT not in text and KEY not in text and OTHER_KEY not in text and "not-the-key" not in text


def test_a_request_werkzeug_refuses_alone_is_logged_once_too(keyed):
    server, log = keyed
    before = len(log_lines(log))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"GET /a b HTTP/1.1\r\n\r\n")  # a space in the path
        assert connection.recv(64).startswith(b"HTTP/1.1 400")
    lines = log_lines(log)[before:]
    assert len(lines) == 1 and LINE.fullmatch(lines[0]) is None and " 400 -" in lines[0]


def test_log_prompts_adds_the_request_texts_truncated(prompts_logged):
    server, log = prompts_logged
    before = len(log_lines(log))
    long_prompt = "y" * 1000
    status, _, _ = call(server, "POST", "/v1/models/tiny:predict",
                        body={"signature_name": "score", "instances": [SECRET_PROMPT, "a\nb", long_prompt]})
    assert status == 200
    [line] = log_lines(log)[before:]
    fields = LINE.fullmatch(line).groups()
    assert fields[4] == "200" and fields[6].startswith(" prompts=")
    assert json.loads(fields[6][len(" prompts="):]) == [SECRET_PROMPT, "a\nb", "y" * 200 + "..."]


def test_without_an_access_log_file_lines_go_to_stderr(servable, capsys):
    client = Client(AccessControl(RestApi(servable, **LIMITS), Access()))
    assert client.get("/v1/models/tiny").status_code == 200
    [line] = capsys.readouterr().err.splitlines()
    assert LINE.fullmatch(line).groups()[2:5] == ("GET", "/v1/models/tiny", "200")


def test_https_round_trip_with_the_certificate_as_ca(https, tls_files):
    assert https.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=tls_files["cert"])
    status, _, body = call(https, "POST", "/v1/models/tiny:predict", f"Bearer {KEY}", SCORE, context=context)
    assert status == 200 and body["predictions"][0]["num_tokens"] > 0
    assert call(https, "GET", "/v1/models/tiny", None, context=context)[0] == 401


def test_a_client_stalling_the_tls_handshake_holds_no_other_up(https, tls_files):
    context = ssl.create_default_context(cafile=tls_files["cert"])
    with socket.create_connection(("127.0.0.1", https.port), timeout=30):  # connects, never says hello
        assert call(https, "GET", "/v1/models/tiny", f"Bearer {KEY}", context=context)[0] == 200
    with pytest.raises((http.client.HTTPException, OSError)):  # plain HTTP to an HTTPS port
        call(https, "GET", "/v1/models/tiny", f"Bearer {KEY}")
    assert call(https, "GET", "/v1/models/tiny", f"Bearer {KEY}", context=context)[0] == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST", "::ffff:127.0.0.1"])
def test_loopback_needs_no_key(host):
    check_exposure(host, has_keys=False, insecure=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_binding_beyond_loopback_without_a_key_is_refused_before_the_model_loads(host, tmp_path, capsys):
    # The model path does not exist: had it been loaded first, the error would say so.
    assert cli.main(["serve", "--model", str(tmp_path / "missing"), "--host", host, "--port", "0"]) == 2
    line = error_line(capsys)
    assert f"--host {host} accepts connections from other machines" in line and "--insecure" in line


@pytest.mark.parametrize("flags", [["--insecure"], ["--api-key-file", "KEY_FILE"]])
def test_binding_beyond_loopback_with_insecure_or_a_key_serves(flags, servable, key_file, monkeypatch, capsys):
    monkeypatch.setattr(server_module, "load_servable", lambda *args, **kwargs: servable)
    monkeypatch.setattr(server_module, "wait_for_stop_signal", lambda: None)  # stop at once
    flags = [key_file if flag == "KEY_FILE" else flag for flag in flags]
    assert cli.main(["serve", "--model", "unused", "--host", "0.0.0.0", "--port", "0", *flags]) == 0
    out = capsys.readouterr().out
    assert re.search(r"at http://0\.0\.0\.0:\d+/v1/models/tiny ", out) and out.endswith("Stopped\n")


@pytest.mark.parametrize("content", ["", "  \n\n \t\n"])
def test_an_api_key_file_without_a_key_is_one_line_and_exit_code_2(content, tmp_path, capsys):
    path = tmp_path / "keys.txt"
    path.write_text(content)
    assert cli.main(["serve", "--model", "unused", "--api-key-file", str(path)]) == 2
    assert f"--api-key-file {path} holds no key" in error_line(capsys)


def test_an_unreadable_or_unsendable_api_key_file_is_one_line_naming_it(tmp_path, capsys):
    assert cli.main(["serve", "--model", "unused", "--api-key-file", str(tmp_path / "none.txt")]) == 2
    assert f"cannot read --api-key-file {tmp_path / 'none.txt'}: No such file" in error_line(capsys)
    path = tmp_path / "keys.txt"
    path.write_text("good-key\nkey with spaces\n")
    assert cli.main(["serve", "--model", "unused", "--api-key-file", str(path)]) == 2
    line = error_line(capsys)
    assert f"--api-key-file {path}: line 2 holds spaces" in line and "key with" not in line


def test_tls_flag_errors_are_one_line_and_exit_code_2(tls_files, tmp_path, capsys):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (["--tls-cert", tls_files["cert"]], "--tls-cert needs --tls-key"),
        (["--tls-key", tls_files["key"]], "--tls-key needs --tls-cert"),
        (["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", tls_files["key"]],
         f"cannot read --tls-cert {tmp_path / 'none.pem'}"),
        (["--tls-cert", tls_files["cert"], "--tls-key", tls_files["other_key"]], "are not a PEM certificate and its"),
        (["--tls-cert", str(garbage), "--tls-key", tls_files["key"]], "are not a PEM certificate and its"),
        (["--tls-cert", tls_files["cert"], "--tls-key", tls_files["encrypted_key"]],
         f"--tls-key {tls_files['encrypted_key']} is encrypted"),
    ]
    for flags, message in cases:
        assert cli.main(["serve", "--model", "unused", *flags]) == 2, flags
        assert message in error_line(capsys), flags


def test_an_unwritable_access_log_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert cli.main(["serve", "--model", "unused", "--access-log", str(tmp_path / "no" / "dir.log")]) == 2
    assert f"cannot open --access-log {tmp_path / 'no' / 'dir.log'}" in error_line(capsys)


def test_serve_flags_default_to_no_key_no_tls_and_no_prompts():
    args = cli.build_parser().parse_args(["serve", "--model", "x"])
    assert (args.api_key_file, args.insecure, args.tls_cert, args.tls_key, args.access_log, args.log_prompts) == (
        None, False, None, None, None, False)

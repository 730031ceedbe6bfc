"""tfllm.encryption: key files, sealed files round trip, and every change to one is refused."""

import io
import os

import pytest
import tensorflow as tf

from tfllm import encryption
from tfllm.errors import UserError
from tfllm.encryption import (
    CHUNK_BYTES, Key, decrypt_file, decrypt_stream, encrypt_file, encrypt_stream, in_memory_directory,
    is_encrypted, read_key, write_new_key,
)

CHUNK = 16  # tiny chunks, so that a few dozen bytes span several


@pytest.fixture
def key(tmp_path):
    return write_new_key(str(tmp_path / "model.key"))


def sealed(data, key, name="variables/variables.index", context=b"", chunk_bytes=CHUNK):
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, key, name, context, chunk_bytes)
    return out.getvalue()


def opened(blob, key, name="variables/variables.index", context=b""):
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, key, name, context)
    return out.getvalue()


def one_line_refusal(call, *words):
    with pytest.raises(UserError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
    return message


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 100])
def test_round_trip_of_every_size_around_the_chunk_boundaries(key, size):
    data = os.urandom(size)
    blob = sealed(data, key)
    assert opened(blob, key) == data


def test_the_same_file_seals_differently_each_time(key):
    # A fresh nonce per file: equal plaintexts are not recognisable on disk.
    data = b"weights" * 10
    assert sealed(data, key) != sealed(data, key)


def test_a_flipped_bit_anywhere_is_refused(key):
    blob = sealed(os.urandom(3 * CHUNK + 5), key)
    for position in range(len(blob)):
        changed = bytearray(blob)
        changed[position] ^= 0x01
        with pytest.raises(UserError):
            opened(bytes(changed), key)


@pytest.mark.parametrize("cut", ["last chunk", "last byte", "extra chunk", "swapped chunks"])
def test_cut_lengthened_or_reordered_files_are_refused(key, cut):
    blob = sealed(os.urandom(3 * CHUNK), key)
    header, block = 25, CHUNK + 16
    changed = {
        "last chunk": blob[:-block],  # ends on a chunk boundary: only the last-chunk flag tells
        "last byte": blob[:-1],
        "extra chunk": blob + blob[header:header + block],
        "swapped chunks": blob[:header] + blob[header + block:header + 2 * block] + blob[header:header + block]
        + blob[header + 2 * block:],
    }[cut]
    one_line_refusal(lambda: opened(changed, key), "was not encrypted with this key or was changed")


def test_a_wrong_key_is_refused_in_one_line_naming_the_file(key, tmp_path):
    path = tmp_path / "variables.index"
    path.write_bytes(b"x" * 100)
    encrypt_file(str(path), key, "variables.index")
    other = write_new_key(str(tmp_path / "other.key"))
    one_line_refusal(lambda: decrypt_file(str(path), other, "variables.index"), str(path),
                     "was not encrypted with this key or was changed")
    assert decrypt_file(str(path), key, "variables.index") == b"x" * 100


def test_a_file_under_another_name_or_context_is_refused(key):
    # Two files sealed under one key cannot be swapped: each is bound to its own name.
    blob = sealed(b"index bytes", key, name="variables/variables.index")
    one_line_refusal(lambda: opened(blob, key, name="variables/variables.data-00000-of-00001"), "changed")
    blob = sealed(b"index bytes", key, context=b"graph A")
    one_line_refusal(lambda: opened(blob, key, context=b"graph B"), "changed")


def test_a_plaintext_or_newer_file_is_refused_with_what_to_do(key):
    one_line_refusal(lambda: opened(b"plain weights, not sealed at all", key), "is not an encrypted file")
    blob = bytearray(sealed(b"data", key))
    blob[8] = encryption.FORMAT_VERSION + 1
    one_line_refusal(lambda: opened(bytes(blob), key), "upgrade tfllm")


def test_encrypt_file_replaces_the_file_in_place_with_a_sealed_one(key, tmp_path):
    path = tmp_path / "data"
    data = os.urandom(2 * CHUNK_BYTES + 3)  # three chunks of the default size
    path.write_bytes(data)
    encrypt_file(str(path), key, "data")
    assert is_encrypted(str(path)) and data[:4096] not in path.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["data", "model.key"]  # no temporary file left
    assert decrypt_file(str(path), key, "data") == data


def test_key_files_hold_64_hex_digits_and_are_private(key, tmp_path):
    text = open(key.path).read()
    assert len(text.strip()) == 64 and int(text, 16) >= 0
    assert os.stat(key.path).st_mode & 0o077 == 0
    assert read_key(key.path) == key and key.secret not in repr(key).encode() and key.secret.hex() not in repr(key)
    # The form `openssl rand -hex 32` writes.
    (tmp_path / "openssl.key").write_text("AB" * 32 + "\n")
    assert read_key(str(tmp_path / "openssl.key")).secret == b"\xab" * 32
    one_line_refusal(lambda: write_new_key(key.path), "already exists")


@pytest.mark.parametrize("content", ["", "abc", "zz" * 32, "ab" * 31, "ab" * 33, "\xff\xfe"])
def test_a_bad_key_file_is_one_line_saying_how_to_make_one(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_text(content, encoding="latin-1")
    one_line_refusal(lambda: read_key(str(path)), str(path), "64 hex digits", "openssl rand -hex 32")
    one_line_refusal(lambda: read_key(str(tmp_path / "missing.key")), "cannot read key file")


def test_key_ids_tell_keys_apart(key, tmp_path):
    other = write_new_key(str(tmp_path / "other.key"))
    assert key.key_id != other.key_id and len(key.key_id) == 16
    assert Key("elsewhere", key.secret).key_id == key.key_id


def test_keygen_writes_a_key_and_refuses_to_overwrite(tmp_path, capsys):
    from tfllm import cli

    path = str(tmp_path / "new.key")
    assert cli.main(["keygen", "--encrypt-key-file", path]) == 0
    assert read_key(path).key_id in capsys.readouterr().out
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert cli.main(["keygen", "--encrypt-key-file", path]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["keygen"]) == 2
    assert "nothing to make" in capsys.readouterr().err


def test_in_memory_directories_are_tensorflow_paths_removed_on_exit(key, tmp_path):
    source = tmp_path / "sealed"
    source.write_bytes(b"w" * 40)
    encrypt_file(str(source), key, "sealed")
    with in_memory_directory() as directory:
        assert directory.startswith("ram://")
        encryption.decrypt_into(str(source), key, "sealed", f"{directory}/plain")
        with tf.io.gfile.GFile(f"{directory}/plain", "rb") as file:
            assert file.read() == b"w" * 40
        encryption.encrypt_from(f"{directory}/plain", str(tmp_path / "again"), key, "again")
    assert not tf.io.gfile.exists(directory)
    assert decrypt_file(str(tmp_path / "again"), key, "again") == b"w" * 40

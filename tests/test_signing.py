"""Ed25519 signatures of a manifest: the right key passes; another key, a changed manifest, a
missing or damaged signature and a bad key file each give one line."""

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tfllm.errors import UserError
from tfllm.manifest import MANIFEST_FILENAME, SIGNATURE_FILENAME, write_manifest
from tfllm.signing import (
    check_signature, generate_key_pair, key_id, load_private_key, load_public_key, sign_manifest,
)


@pytest.fixture
def signed(tmp_path):
    """(directory, public key, another public key): a directory whose manifest is signed."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "weights.bin").write_bytes(b"weights")
    write_manifest(str(tmp_path / "files"), {})
    ours, theirs = generate_key_pair(str(tmp_path / "ours")), generate_key_pair(str(tmp_path / "theirs"))
    sign_manifest(str(tmp_path / "files"), load_private_key(ours[0]))
    return tmp_path / "files", load_public_key(ours[1]), load_public_key(theirs[1])


def test_the_signers_key_passes_and_the_signature_names_it(signed):
    directory, ours, _ = signed
    assert check_signature(str(directory), ours) is None
    record = json.loads((directory / SIGNATURE_FILENAME).read_text())
    assert record["algorithm"] == "Ed25519" and record["key_id"] == key_id(ours)


def test_another_key_fails_naming_both_keys(signed):
    directory, ours, theirs = signed
    problem = check_signature(str(directory), theirs)
    assert problem == (f"{SIGNATURE_FILENAME} was made by another key ({key_id(ours)}); "
                       f"--public-key is {key_id(theirs)}")


def test_a_manifest_changed_after_signing_fails(signed):
    directory, ours, _ = signed
    with open(directory / MANIFEST_FILENAME, "a") as file:
        file.write(" ")
    assert check_signature(str(directory), ours).endswith("the manifest changed after it was signed")


def test_a_missing_or_damaged_signature_fails(signed):
    directory, ours, _ = signed
    (directory / SIGNATURE_FILENAME).write_text('{"algorithm": "Ed25519", "signature": "not base64!"}')
    assert check_signature(str(directory), ours).startswith(f"{SIGNATURE_FILENAME} cannot be read")
    (directory / SIGNATURE_FILENAME).unlink()
    assert check_signature(str(directory), ours).startswith(f"{SIGNATURE_FILENAME} is missing")


def test_keys_are_never_overwritten_and_other_key_types_are_refused(tmp_path):
    generate_key_pair(str(tmp_path))
    with pytest.raises(UserError, match="already exists"):
        generate_key_pair(str(tmp_path))
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.pem").write_bytes(other)
    with pytest.raises(UserError, match="not an Ed25519 key"):
        load_private_key(str(tmp_path / "ec.pem"))
    with pytest.raises(UserError, match="cannot read --public-key"):
        load_public_key(str(tmp_path / "missing.pem"))
    with pytest.raises(UserError, match="not a PEM public key"):
        load_public_key(str(tmp_path / "signing_key.pem"))

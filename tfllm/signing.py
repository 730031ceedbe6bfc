"""Ed25519 signatures of a manifest: who vouches for a run dir or an export.

The signature is detached: `manifest.json.sig` beside `manifest.json`, over the manifest's exact
bytes, as JSON:

    {"algorithm": "Ed25519", "key_id": "sha256:<SHA-256 of the raw public key>",
     "signature": "<base64 of the 64-byte signature>"}

The manifest holds a SHA-256 of every file, so one signature covers them all, and files too big
to read twice are never read by the signer. `key_id` is a hint for the error message (which key
signed); trust comes from the signature check alone. Keys are PEM files, as
`openssl genpkey -algorithm ed25519` writes them, or `tfllm keygen`.
"""

import base64
import hashlib
import json
import os

from tfllm.errors import UserError
from tfllm.files import write_atomically
from tfllm.manifest import MANIFEST_FILENAME, SIGNATURE_FILENAME
from tfllm.files import read_user_file

ALGORITHM = "Ed25519"
PRIVATE_KEY_FILENAME = "signing_key.pem"
PUBLIC_KEY_FILENAME = "signing_key.pub.pem"


def load_private_key(path, flag="--sign-key-file"):
    """The Ed25519 private key in the PEM file `path`; a `UserError` naming `flag` and saying what
    is wrong."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(_read(path, flag), password=None)
    except (ValueError, TypeError) as error:
        raise UserError(f"{flag} {path} is not an unencrypted PEM private key ({error}); make one with "
                        "`tfllm keygen --out DIR`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{flag} {path} holds a {type(key).__name__}, not an Ed25519 key; make one with "
                        "`tfllm keygen --out DIR`")
    return key


def load_public_key(path):
    """The Ed25519 public key in the PEM file `path`; a `UserError` saying what is wrong."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(_read(path, "--public-key"))
    except (ValueError, TypeError) as error:
        raise UserError(f"--public-key {path} is not a PEM public key ({error}); pass the .pub.pem file "
                        "`tfllm keygen` wrote") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"--public-key {path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _read(path, flag):
    return read_user_file(path, flag, "pass an existing key file", binary=True)


def key_id(public_key):
    """`sha256:<hex>` of the raw 32 bytes of `public_key`: a short name for it."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def sign_manifest(directory, private_key):
    """Writes `directory/manifest.json.sig`, the signature of its manifest's bytes; returns its path."""
    with open(os.path.join(directory, MANIFEST_FILENAME), "rb") as file:
        signature = private_key.sign(file.read())
    record = {"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()),
              "signature": base64.b64encode(signature).decode("ascii")}
    path = os.path.join(directory, SIGNATURE_FILENAME)
    write_atomically(path, json.dumps(record, indent=2) + "\n")
    return path


def check_signature(directory, public_key):
    """None when `directory/manifest.json.sig` is `public_key`'s signature of its manifest; else
    the one-line problem."""
    from cryptography.exceptions import InvalidSignature

    path = os.path.join(directory, SIGNATURE_FILENAME)
    if not os.path.exists(path):
        return f"{SIGNATURE_FILENAME} is missing: the manifest is not signed (sign it with `tfllm sign`)"
    try:
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
        signature = base64.b64decode(record["signature"], validate=True)
        if record.get("algorithm") != ALGORITHM:
            return f"{SIGNATURE_FILENAME} is an {record.get('algorithm')!r} signature; only {ALGORITHM} is checked"
        with open(os.path.join(directory, MANIFEST_FILENAME), "rb") as file:
            manifest = file.read()
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{SIGNATURE_FILENAME} cannot be read: {type(error).__name__}: {error}"
    expected = key_id(public_key)
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        if record.get("key_id") != expected:
            return (f"{SIGNATURE_FILENAME} was made by another key ({record.get('key_id')}); "
                    f"--public-key is {expected}")
        return f"{SIGNATURE_FILENAME} does not match {MANIFEST_FILENAME}: the manifest changed after it was signed"
    return None


def generate_key_pair(out):
    """Writes a new Ed25519 key pair into the directory `out`: `signing_key.pem` (private,
    readable by its owner alone) and `signing_key.pub.pem`; returns their paths. Existing keys
    are never overwritten: a lost private key cannot be made again."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = os.path.join(out, PRIVATE_KEY_FILENAME), os.path.join(out, PUBLIC_KEY_FILENAME)
    for path in (private_path, public_path):
        if os.path.exists(path):
            raise UserError(f"{path} already exists; choose another --out (a key is never overwritten)")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {out}: {error.strerror}; pass a writable --out") from None
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomically(private_path, private_pem, mode=0o600)
    write_atomically(public_path, public_pem)
    return private_path, public_path

"""Encryption at rest: files sealed with AES-256-GCM under a key file, opened only in memory.

    openssl rand -hex 32 > model.key && chmod 600 model.key     # a key: 64 hex digits
    tfllm keygen --encrypt-key-file model.key                   # the same, refusing to overwrite

A key file holds 32 random bytes as 64 hexadecimal digits (surrounding whitespace ignored), so
that it can be written, copied and checked with ordinary text tools.

An encrypted file is a 25-byte header (`MAGIC`, the format version, the plaintext bytes per
chunk, a random 96-bit nonce) and the plaintext in chunks, each sealed with AES-GCM (16-byte tag)
under a nonce derived from the file's nonce, the chunk's position and a flag on the last chunk
(the STREAM construction): a chunk cannot be moved, dropped or repeated, nor the file cut short
or lengthened, without failing its tag. Every chunk's associated data is the header, the file's
name inside whatever holds it (`name`) and an optional `context`: a file renamed or swapped for
another sealed under the same key fails too. Files of any size are sealed and opened a chunk at
a time. Anything that fails is a `UserError` of one line naming the file; callers discard what
they opened of it before using any of it (see `in_memory_directory`).
"""

import binascii
import contextlib
import dataclasses
import hashlib
import io
import os
import secrets
import struct
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tfllm.errors import UserError
from tfllm.files import atomically_written

KEY_BYTES = 32
MAGIC = b"TFLLMENC"
FORMAT_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
# Large enough that the per-chunk overhead (16 bytes, one AES-GCM call) is negligible, small
# enough that sealing a file of gigabytes needs a few megabytes of memory at a time.
CHUNK_BYTES = 4 << 20
_HEADER = struct.Struct(f">{len(MAGIC)}sBI{NONCE_BYTES}s")
KEY_HINT = "write one with `openssl rand -hex 32 > KEY` or `tfllm keygen --encrypt-key-file KEY`"


@dataclasses.dataclass(frozen=True)
class Key:
    """A 256-bit key and the file it came from; `repr` never shows the secret."""

    path: str
    secret: bytes = dataclasses.field(repr=False)

    @property
    def key_id(self):
        """16 hex digits that tell keys apart without revealing them (a hash, not the key)."""
        return hashlib.sha256(b"tfllm key id\0" + self.secret).hexdigest()[:16]


def read_key(path):
    """The `Key` in the key file `path`; `UserError` unless it holds 64 hex digits."""
    try:
        with open(path, encoding="ascii") as file:
            text = file.read().strip()
    except OSError as error:
        raise UserError(f"cannot read key file {path}: {error.strerror}; pass an existing key file") from None
    except UnicodeDecodeError:
        text = None
    try:
        secret = binascii.unhexlify(text) if text is not None else b""
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != KEY_BYTES:
        raise UserError(f"key file {path} does not hold {2 * KEY_BYTES} hex digits ({KEY_BYTES} bytes); {KEY_HINT}")
    return Key(path, secret)


def write_new_key(path):
    """Writes a new random key file at `path`, readable by its owner alone; returns its `Key`.
    An existing file is never overwritten: the data sealed under it would be lost."""
    secret = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"key file {path} already exists; choose a new path (overwriting it would lose "
                        "everything encrypted with it)") from None
    except OSError as error:
        raise UserError(f"cannot create key file {path}: {error.strerror}; choose a writable path") from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secret.hex() + "\n")
    return Key(path, secret)


def is_encrypted(path, opener=open):
    """Whether the file `path` starts with this module's header (`opener` as in `decrypt_file`)."""
    with opener(path, "rb") as file:
        return file.read(len(MAGIC)) == MAGIC


def _nonce(base, index, last):
    # The position in the high bytes, the last-chunk flag in the lowest: no two chunks of a file,
    # and no chunk as last and as not last, share a nonce.
    return (int.from_bytes(base, "big") ^ (index << 8 | int(last))).to_bytes(NONCE_BYTES, "big")


def _associated_data(header, name, context):
    encoded = name.encode("utf-8")
    return header + struct.pack(">I", len(encoded)) + encoded + context


def _read_exactly(reader, size):
    parts, left = [], size
    while left:
        part = reader.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _chunks(reader, size):
    """`(index, chunk, last)` of `reader` read `size` bytes at a time; one empty chunk for an
    empty input. The next chunk is read before a chunk is handed out, to know which is last."""
    chunk, index = _read_exactly(reader, size), 0
    while True:
        following = _read_exactly(reader, size) if len(chunk) == size else b""
        yield index, chunk, not following
        if not following:
            return
        chunk, index = following, index + 1


def encrypt_stream(reader, writer, key, name, context=b"", chunk_bytes=CHUNK_BYTES):
    """Seals what `reader` (`.read(n)`) holds into `writer` (`.write(b)`) under `key`, for a
    file called `name` (and the optional bytes `context`), `chunk_bytes` at a time."""
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, chunk_bytes, secrets.token_bytes(NONCE_BYTES))
    aad = _associated_data(header, name, context)
    cipher = AESGCM(key.secret)
    writer.write(header)
    base = header[-NONCE_BYTES:]
    for index, chunk, last in _chunks(reader, chunk_bytes):
        writer.write(cipher.encrypt(_nonce(base, index, last), chunk, aad))


def decrypt_stream(reader, writer, key, name, context=b"", where=None):
    """Opens what `encrypt_stream` sealed, writing the plaintext into `writer` chunk by chunk,
    each checked before it is written. A `UserError` naming `where` (default `name`) when the
    input was sealed under another key, name or context, or changed: `writer` may then hold a
    part of the plaintext, which the caller must discard unused."""
    where = where or name
    header = _read_exactly(reader, _HEADER.size)
    if len(header) < _HEADER.size or not header.startswith(MAGIC):
        raise UserError(f"{where} is not an encrypted file (it does not start with {MAGIC.decode()}); "
                        "pass the encrypted export or run, or drop the key")
    _, version, chunk_bytes, base = _HEADER.unpack(header)
    if version != FORMAT_VERSION:
        raise UserError(f"{where} is encrypted in format {version}, this tfllm reads format {FORMAT_VERSION}; "
                        "upgrade tfllm")
    aad = _associated_data(header, name, context)
    cipher = AESGCM(key.secret)
    try:
        for index, chunk, last in _chunks(reader, chunk_bytes + TAG_BYTES):
            writer.write(cipher.decrypt(_nonce(base, index, last), chunk, aad))
    except (InvalidTag, ValueError):
        raise UserError(f"{where} was not encrypted with this key or was changed (key file {key.path}); pass "
                        "the key it was encrypted with, or restore the file from a copy") from None


def encrypt_file(path, key, name, context=b"", chunk_bytes=CHUNK_BYTES):
    """Replaces the file `path` by its sealed form (`encrypt_stream`): a crash leaves the file
    as it was."""
    encrypt_from(path, path, key, name, context, chunk_bytes, opener=open)


def decrypt_file(path, key, name, context=b"", opener=open):
    """The plaintext of the sealed file `path`, in memory (`decrypt_stream`); `opener` opens it
    (`tf.io.gfile.GFile` for TensorFlow's file systems)."""
    plaintext = io.BytesIO()
    with opener(path, "rb") as reader:
        decrypt_stream(reader, plaintext, key, name, context, where=path)
    return plaintext.getvalue()


@contextlib.contextmanager
def in_memory_directory(prefix="tfllm"):
    """Yields a new directory of TensorFlow's in-memory file system (`ram://`), removed on exit:
    what TensorFlow must read from a path (a SavedModel, a checkpoint) is opened into it, and
    never reaches a disk. It lives in this process's memory alone."""
    import tensorflow as tf

    path = f"ram://{prefix}-{os.getpid()}-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(path)
    try:
        yield path
    finally:
        with contextlib.suppress(tf.errors.OpError):
            tf.io.gfile.rmtree(path)


def decrypt_into(path, key, name, destination, context=b""):
    """Opens the sealed file `path` into `destination`, a path TensorFlow writes (`ram://...`)."""
    import tensorflow as tf

    with open(path, "rb") as reader, tf.io.gfile.GFile(destination, "wb") as writer:
        decrypt_stream(reader, writer, key, name, context, where=path)


def encrypt_from(source, path, key, name, context=b"", chunk_bytes=CHUNK_BYTES, opener=None):
    """Seals `source`, a path TensorFlow reads (`ram://...`; `opener` for another kind), into
    the file `path` (`tfllm.files.atomically_written`: whole or absent)."""
    if opener is None:
        import tensorflow as tf

        opener = tf.io.gfile.GFile
    with opener(source, "rb") as reader, atomically_written(path) as writer:
        encrypt_stream(reader, writer, key, name, context, chunk_bytes)


"""Encrypted exports: a SavedModel whose weights and assets are sealed with a key file.

    tfllm export --run-dir runs/demo --out exports/demo --encrypt-key-file model.key
    tfllm serve --model exports/demo --encrypt-key-file model.key

`variables/` (the weights) and `assets/` (vocabulary files, where a tokenizer has them) are
sealed with `tfllm.encryption`; `saved_model.pb` (the graph: the architecture, the signatures
and the tokenizer's tables) and `fingerprint.pb` stay readable, so that `saved_model_cli show`
and the server's metadata still describe the export. Each sealed file's associated data holds
its path in the version and the SHA-256 of `saved_model.pb`: the graph cannot be replaced by
another (one that would send the weights elsewhere, say) without the weights failing to open.
The manifest records the algorithm, the key's id and the sealed files.

Nothing opened reaches a disk: the SavedModel is written into TensorFlow's in-memory file
system (`ram://`) and sealed from there into the version directory, and loading opens it into
`ram://` again, loads it, and removes the copy, so the weights sit in memory twice while
loading. TensorFlow Serving cannot load an encrypted export: `tfllm serve` serves it.
"""

import hashlib
import os

import tensorflow as tf

from tfllm.encryption import decrypt_into, encrypt_from, in_memory_directory, is_encrypted, read_key
from tfllm.errors import UserError
from tfllm.manifest import MANIFEST_FILENAME, read_manifest

ALGORITHM = "AES-256-GCM"
ENCRYPTED_DIRECTORIES = ("variables", "assets")
GRAPH_FILENAME = "saved_model.pb"


def sealed(relative):
    """Whether the file at `relative` (a "/" path inside a version) holds the model's content."""
    return relative.split("/", 1)[0] in ENCRYPTED_DIRECTORIES


def _files(directory):
    """Relative "/" paths of the files under `directory` (any TensorFlow file system), sorted."""
    found = []
    for root, _, names in tf.io.gfile.walk(directory):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
            if relative != MANIFEST_FILENAME:
                found.append(relative)
    return sorted(found)


def _graph_context(directory):
    with tf.io.gfile.GFile(os.path.join(directory, GRAPH_FILENAME), "rb") as file:
        return b"saved_model.pb sha256:" + hashlib.sha256(file.read()).digest()


def save_encrypted(save, target, key):
    """Calls `save(path)` (a module's `save`) into memory and writes that SavedModel into the
    directory `target`, its weights and assets sealed under `key`; returns the manifest's
    `encryption` entry."""
    with in_memory_directory("tfllm-export") as scratch:
        save(scratch)
        context = _graph_context(scratch)
        files = _files(scratch)
        for relative in files:
            source, path = f"{scratch}/{relative}", os.path.join(target, *relative.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if sealed(relative):
                encrypt_from(source, path, key, relative, context)
            else:
                tf.io.gfile.copy(source, path, overwrite=True)
    return {"algorithm": ALGORITHM, "key_id": key.key_id, "files": [f for f in files if sealed(f)],
            "bound_to": GRAPH_FILENAME}


def load_saved_model(path, key_file=None):
    """`tf.saved_model.load(path)`, opening an encrypted export with the key in `key_file` in
    memory. `UserError` of one line when an encrypted export has no key, the wrong key or a
    changed file, or when a key is given for an export whose weights are not encrypted."""
    files = _files(path)
    encrypted = [relative for relative in files if sealed(relative) and is_encrypted(os.path.join(path, relative))]
    if key_file is None:
        if encrypted:
            raise UserError(f"{path} is encrypted (its {encrypted[0]}{_key_id_note(path)}); "
                            "pass --encrypt-key-file with the key it was exported with")
        return tf.saved_model.load(path)
    key = read_key(key_file)
    plain = [relative for relative in files if sealed(relative) and relative not in encrypted]
    if plain or not encrypted:
        # A plaintext file where sealed ones belong would be served as if the key vouched for it.
        raise UserError(f"{path} is not encrypted ({'its ' + plain[0] if plain else 'it has no variables/'} is "
                        "plaintext), but --encrypt-key-file was given; export it again with --encrypt-key-file, "
                        "or drop the flag")
    recorded = _recorded_key_id(path)
    if recorded and recorded != key.key_id:
        raise UserError(f"{path} was encrypted with key id {recorded}, and {key_file} has key id {key.key_id}; "
                        "pass the key file it was exported with")
    context = _graph_context(path)
    with in_memory_directory("tfllm-load") as scratch:
        for relative in files:
            source, destination = os.path.join(path, *relative.split("/")), f"{scratch}/{relative}"
            tf.io.gfile.makedirs(os.path.dirname(destination))
            if sealed(relative):
                decrypt_into(source, key, relative, destination, context)
            else:
                tf.io.gfile.copy(source, destination, overwrite=True)
        # Every variable is read while loading, so the copy can go as soon as this returns.
        return tf.saved_model.load(scratch)


def _recorded_key_id(path):
    try:
        manifest = read_manifest(path) or {}
    except (OSError, ValueError):
        return None
    encryption = manifest.get("encryption")
    return encryption.get("key_id") if isinstance(encryption, dict) else None


def _key_id_note(path):
    recorded = _recorded_key_id(path)
    return f" is sealed; key id {recorded}" if recorded else " is sealed"

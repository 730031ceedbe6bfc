"""The export manifest: what an export holds, where it came from, and a SHA-256 of every file.

`EXPORT_DIR/N/manifest.json` sits next to `saved_model.pb`; TensorFlow Serving ignores it. The
server checks it before serving, so a version whose files changed after export (a partial copy,
a bad sync, an edit) is refused instead of served. This module needs only the standard library.
"""

import hashlib
import json
import os

from tfllm.files import write_atomically

MANIFEST_FILENAME = "manifest.json"
FORMAT_VERSION = 1
_CHUNK_BYTES = 1 << 20


def sha256_of_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(directory):
    """`{relative path: SHA-256}` of every file under `directory` but the manifest, sorted.

    Paths use "/" whatever the platform, so a manifest checks the same on every machine.
    """
    digests = {}
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory).replace(os.sep, "/")
            if relative != MANIFEST_FILENAME:
                digests[relative] = sha256_of_file(path)
    return digests


def write_manifest(directory, description):
    """Writes `description` plus `format_version` and `files` as `directory/manifest.json`.

    The file is written atomically, so a reader never sees half of it. Returns the manifest written.
    """
    manifest = {"format_version": FORMAT_VERSION, **description, "files": file_digests(directory)}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomically(os.path.join(directory, MANIFEST_FILENAME), text)
    return manifest


def read_manifest(directory):
    """The manifest of `directory` as a dict, or None when it has none."""
    path = os.path.join(directory, MANIFEST_FILENAME)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def verify_manifest(directory):
    """Problems found comparing `directory` with its manifest, one line each; [] when it matches.

    A missing manifest is a problem too: without it nothing can be checked.
    """
    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError) as error:
        return [f"{MANIFEST_FILENAME} cannot be read: {error}"]
    if manifest is None:
        return [f"{MANIFEST_FILENAME} is missing"]
    expected = manifest.get("files")
    if not isinstance(expected, dict):
        return [f"{MANIFEST_FILENAME} has no 'files' map"]
    actual = file_digests(directory)
    problems = []
    for path in sorted(set(expected) | set(actual)):
        if path not in actual:
            problems.append(f"{path} is missing")
        elif path not in expected:
            problems.append(f"{path} is not in the manifest")
        elif actual[path] != expected[path]:
            problems.append(f"{path} has changed (SHA-256 {actual[path][:12]}..., manifest {expected[path][:12]}...)")
    return problems

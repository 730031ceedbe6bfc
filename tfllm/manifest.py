"""`manifest.json`: what a directory holds, where it came from, and a SHA-256 of every file.

An export version (`tfllm export`), a Hugging Face or adapters export, and a run dir (`Run.write_manifest`)
each carry one. `verify_manifest` names every file that changed, is missing or is not in the
manifest; `tfllm verify` and the server run it. A detached signature (`tfllm.signing`) sits
beside it as `manifest.json.sig` and is never itself listed. This module needs only the
standard library.
"""

import contextlib
import json
import os

from tfllm.digests import file_digests, file_stat
from tfllm.files import read_json_if_present, write_atomically

MANIFEST_FILENAME = "manifest.json"
SIGNATURE_FILENAME = "manifest.json.sig"
FORMAT_VERSION = 1
# Written after the manifest, so they cannot be listed in it.
ALWAYS_EXCLUDED = (MANIFEST_FILENAME, SIGNATURE_FILENAME)


def write_manifest(directory, description, excluded=(), reuse=False):
    """Writes `description` plus `format_version` and `files` as `directory/manifest.json`.

    `excluded`: relative paths (files, or directories whole) left out; they are recorded in the
    manifest, so a check leaves them out too. `reuse`: take the digest of a file whose size and
    modification time are those the previous manifest recorded instead of reading it again (the
    manifest then records them for the next time); a check always reads every byte.

    The file is written atomically, so a reader never sees half of it; a signature of the
    manifest it replaces no longer holds and is removed. Returns the manifest written.
    """
    known = known_digests(directory) if reuse else None
    files = file_digests(directory, ALWAYS_EXCLUDED + tuple(excluded), known)
    manifest = {"format_version": FORMAT_VERSION, **description, "files": files}
    if excluded:
        manifest["excluded"] = sorted(excluded)
    if reuse:
        manifest["stat"] = {path: file_stat(os.path.join(directory, path)) for path in files}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomically(os.path.join(directory, MANIFEST_FILENAME), text)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, SIGNATURE_FILENAME))
    return manifest


def read_manifest(directory):
    """The manifest of `directory` as a dict, or None when it has none."""
    return read_json_if_present(os.path.join(directory, MANIFEST_FILENAME))


def known_digests(directory):
    """`{relative path: (size, mtime_ns, SHA-256)}` the manifest of `directory` recorded; {}
    when it has none or it recorded no sizes and times."""
    try:
        manifest = read_manifest(directory) or {}
    except (OSError, ValueError):
        return {}
    files, stat = manifest.get("files"), manifest.get("stat")
    if not isinstance(files, dict) or not isinstance(stat, dict):
        return {}
    return {path: (*stat[path], digest) for path, digest in files.items()
            if isinstance(stat.get(path), list) and len(stat[path]) == 2}


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
    expected, excluded = manifest.get("files"), manifest.get("excluded", [])
    if not isinstance(expected, dict):
        return [f"{MANIFEST_FILENAME} has no 'files' map"]
    if not isinstance(excluded, list) or not all(isinstance(path, str) for path in excluded):
        return [f"{MANIFEST_FILENAME} has an 'excluded' entry that is not a list of paths"]
    actual = file_digests(directory, ALWAYS_EXCLUDED + tuple(excluded))
    problems = []
    for path in sorted(set(expected) | set(actual)):
        if path not in actual:
            problems.append(f"{path} is missing")
        elif path not in expected:
            problems.append(f"{path} is not in the manifest")
        elif actual[path] != expected[path]:
            problems.append(f"{path} has changed (SHA-256 {actual[path][:12]}..., manifest {expected[path][:12]}...)")
    return problems


def manifest_directories(path):
    """The directories with a manifest that `path` stands for: itself, or, for an export base
    dir (TF Serving's layout), each numbered version under it; [] when it is neither."""
    if os.path.isfile(os.path.join(path, MANIFEST_FILENAME)):
        return [path]
    if not os.path.isdir(path):
        return []
    versions = sorted(int(name) for name in os.listdir(path)
                      if name.isdigit() and os.path.isdir(os.path.join(path, name)))
    return [os.path.join(path, str(version)) for version in versions]

"""SHA-256 digests of files and directories, read in chunks so a file of any size costs little memory.

Shared by the manifests (`tfllm.manifest`) and the lineage of a run (`tfllm.lineage`). Needs only
the standard library.
"""

import hashlib
import os

_CHUNK_BYTES = 1 << 20


def sha256_of_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_digests(digests):
    """One SHA-256 over a `{name: SHA-256}` map: that of its `sha256sum`-style listing (one
    "DIGEST  NAME" line per file, sorted by name), so it changes when any file or name does."""
    listing = "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def file_stat(path):
    """`[size, mtime_ns]`: what `file_digests` compares to trust a digest it computed before."""
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def relative_files(directory, excluded=()):
    """`[(relative path, path)]` of every file under `directory`, sorted, but the paths in
    `excluded` (relative paths of files, or of directories to leave out whole).

    Relative paths use "/" whatever the platform, so a listing compares the same on every machine.
    """
    excluded = set(excluded)
    found = []
    for root, dirs, files in os.walk(directory):
        relative_root = os.path.relpath(root, directory).replace(os.sep, "/")
        prefix = "" if relative_root == "." else relative_root + "/"
        dirs[:] = sorted(d for d in dirs if prefix + d not in excluded)
        for name in sorted(files):
            if prefix + name not in excluded:
                found.append((prefix + name, os.path.join(root, name)))
    return found


def file_digests(directory, excluded=(), known=None):
    """`{relative path: SHA-256}` of every file under `directory` but `excluded`, sorted.

    `known` maps relative paths to `(size, mtime_ns, SHA-256)` computed before: a file whose
    size and modification time are unchanged is not read again, which keeps rewriting the
    manifest of a large run cheap. Leave it out to hash every byte (as a check must).
    """
    known = known or {}
    digests = {}
    for relative, path in relative_files(directory, excluded):
        previous = known.get(relative)
        if previous is not None and list(previous[:2]) == file_stat(path):
            digests[relative] = previous[2]
        else:
            digests[relative] = sha256_of_file(path)
    return digests

"""A run's lineage: what it was made from, as SHA-256 digests, in `RUN_DIR/lineage.json`.

    {"format_version": 1, "created": "2025-01-01T12:00:00+00:00",
     "inputs": {"data.path": {"path": "data/", "files": {"data/a.txt": SHA-256, ...}},
                "data.val_path": null},                       # null for an imported run
     "corpus": {"sha256": ..., "files": {"train-00000.tfrecord": ..., "stats.json": ...}},
     "config": {"path": "config.yaml", "sha256": ...},
     "tokenizer": {"sha256": ..., "files": {"tokenizer.json": ..., ...}},
     "parent": {"path": ..., "checkpoint": ..., "lineage_sha256": ..., "manifest_sha256": ...},
     "source": {"path": "hf://ORG/NAME", "directory": ..., "files": {...}},   # tfllm import
     "versions": {"tfllm": ..., "tensorflow": ..., "keras": ..., "python": ...}}

A directory's `sha256` is one digest over its files (`tfllm.digests.sha256_of_digests`). A
`builtin:NAME` input is made from the running Python's own files: its Python version names it.
`parent` is the run of `train.init_from` (its lineage and manifest digests, or the digests of the
checkpoint read when it has no manifest), `source` the checkpoint `tfllm import` read.

Every start of a run records its lineage again (`record`): when it is what the file holds, the
file is left as it was; when it differs (a raised `train.steps` changes config.yaml), the new
lineage is written, the sections that changed are printed, and their old values are kept
under `previous`, so no lineage is ever replaced silently.
"""

import datetime
import fnmatch
import json
import os
import platform

from tfllm.data.builtin import is_builtin
from tfllm.data.readers import resolve_files
from tfllm.digests import file_digests, sha256_of_digests, sha256_of_file
from tfllm.errors import UserError
from tfllm.files import read_json_if_present, write_atomically
from tfllm.manifest import MANIFEST_FILENAME, known_digests

LINEAGE_FILENAME = "lineage.json"
FORMAT_VERSION = 1
# Not part of what a run was made from: when a record was written, and the records before it.
_BOOKKEEPING = ("format_version", "created", "previous")


def input_record(path):
    """`{"path", "files": {file: SHA-256}}` of a corpus or examples path (a file, directory or
    glob, as `tfllm.data.readers` resolves it), `{"path", "builtin"}` of a `builtin:NAME`
    one; None for None. A path that is gone (a resumed run whose data moved) records `files` null."""
    if path is None:
        return None
    if is_builtin(path):
        return {"path": path, "builtin": f"python {platform.python_version()}"}
    try:
        files = resolve_files(path)
    except UserError:
        return {"path": path, "files": None}
    return {"path": path, "files": {file: sha256_of_file(file) for file in files}}


def directory_record(run_path, directory, known=None):
    """`{"sha256", "files"}` of `directory` inside the run dir `run_path`; None when there is
    none. `known`: the run manifest's `known_digests`, whose unchanged files are not read again."""
    if not os.path.isdir(directory):
        return None
    prefix = os.path.relpath(directory, run_path).replace(os.sep, "/") + "/"
    inside = {path[len(prefix):]: value for path, value in (known or {}).items() if path.startswith(prefix)}
    files = file_digests(directory, known=inside)
    return {"sha256": sha256_of_digests(files), "files": files}


def parent_record(run_path, checkpoint):
    """What a run started from the run `run_path` (`train.init_from`), at `checkpoint`, records
    of it: the digests of its lineage and manifest, or, when it has no manifest to pin its
    weights, the digests of the checkpoint's files."""
    record = {"path": os.path.abspath(run_path), "checkpoint": os.path.abspath(checkpoint),
              "lineage_sha256": _digest_if_exists(os.path.join(run_path, LINEAGE_FILENAME)),
              "manifest_sha256": _digest_if_exists(os.path.join(run_path, MANIFEST_FILENAME))}
    if record["manifest_sha256"] is None:
        directory, prefix = os.path.split(os.path.abspath(checkpoint))
        record["checkpoint_files"] = {name: sha256_of_file(os.path.join(directory, name))
                                      for name in sorted(os.listdir(directory)) if name.startswith(prefix + ".")}
    return record


def source_record(source, directory, patterns):
    """What an imported run records of the checkpoint `source` (as given: a directory or
    hf://ORG/NAME), read from `directory`: the digest of each of its top-level files that
    matches one of `patterns` (the files an import reads)."""
    names = sorted(name for name in os.listdir(directory) if os.path.isfile(os.path.join(directory, name))
                   and any(fnmatch.fnmatch(name, pattern) for pattern in patterns))
    return {"path": source, "directory": os.path.abspath(directory),
            "files": {name: sha256_of_file(os.path.join(directory, name)) for name in names}}


def versions():
    """The versions of the software that made a run."""
    import keras
    import tensorflow as tf

    import tfllm

    return {"tfllm": tfllm.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version()}


def of_run(run, data_paths=None, parent=None, source=None):
    """The lineage of the `Run` `run` as it stands now.

    `data_paths`: `{"data.path": ..., "data.val_path": ...}` of a trained run, None for an imported
    one. A corpus that is the one the previous lineage recorded was prepared from the inputs it
    recorded (a resumed run reuses its corpus/), so they are not read again.
    """
    previous = read(run.path)
    known = known_digests(run.path)
    corpus = directory_record(run.path, run.corpus_dir, known)
    inputs = None
    if data_paths is not None:
        # Compared by path before anything is read: hashing a large corpus's inputs only to
        # keep the previous digests would read every byte for nothing.
        if previous and corpus is not None and previous.get("corpus") == corpus and \
                _paths(previous.get("inputs")) == dict(data_paths):
            inputs = previous["inputs"]
        else:
            inputs = {key: input_record(path) for key, path in data_paths.items()}
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "corpus": corpus,
        "config": {"path": os.path.relpath(run.config_path, run.path).replace(os.sep, "/"),
                   "sha256": _digest_if_exists(run.config_path)},
        "tokenizer": directory_record(run.path, run.tokenizer_dir, known),
        "parent": parent,
        "source": source,
        "versions": versions(),
    }


def _paths(inputs):
    return {key: (value or {}).get("path") for key, value in (inputs or {}).items()}


def record(run_path, lineage):
    """Write `lineage` as the run's lineage.json, keeping what changed since the one it holds;
    returns the names of the sections that changed ([] for a new run, or an unchanged one)."""
    previous = read(run_path)
    if previous is None:
        _write(run_path, lineage)
        return []
    changed = [key for key in lineage if key not in _BOOKKEEPING and previous.get(key) != lineage[key]]
    if changed:
        earlier = {"created": previous.get("created"), **{key: previous.get(key) for key in changed}}
        _write(run_path, {**lineage, "previous": previous.get("previous", []) + [earlier]})
    return changed


def read(run_path):
    """The run's lineage as a dict, or None when it has none."""
    return read_json_if_present(os.path.join(run_path, LINEAGE_FILENAME))


def _write(run_path, lineage):
    write_atomically(os.path.join(run_path, LINEAGE_FILENAME), json.dumps(lineage, indent=2, sort_keys=True) + "\n")


def _digest_if_exists(path):
    return sha256_of_file(path) if os.path.exists(path) else None

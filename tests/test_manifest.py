"""The library's manifest: excluded paths, digests reused only while a file is unchanged, a
stale signature removed, and the directories a path stands for."""

import hashlib
import json
import os

from tfllm.digests import file_digests, file_stat
from tfllm.manifest import (
    ALWAYS_EXCLUDED, MANIFEST_FILENAME, SIGNATURE_FILENAME, known_digests, manifest_directories, read_manifest,
    verify_manifest, write_manifest,
)


def write_files(directory, files):
    """`directory` holding `files` ({relative path: bytes}); returns it."""
    for path, data in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(data)
    return directory


def make_run(directory):
    return write_files(directory, {"weights.bin": b"weights", "logs/events": b"event 1"})


def test_excluded_paths_are_left_out_and_recorded_so_a_check_leaves_them_out_too(tmp_path):
    run = make_run(tmp_path / "run")
    manifest = write_manifest(str(run), {"kind": "run"}, excluded=["logs"])
    assert list(manifest["files"]) == ["weights.bin"] and manifest["excluded"] == ["logs"]
    (run / "logs" / "events").write_bytes(b"event 1, event 2")
    assert verify_manifest(str(run)) == []
    (run / "weights.bin").write_bytes(b"weightz")
    assert verify_manifest(str(run))[0].startswith("weights.bin has changed")


def test_a_digest_is_reused_while_size_and_time_are_unchanged_and_a_check_rereads_every_byte(tmp_path):
    run = make_run(tmp_path / "run")
    write_manifest(str(run), {}, excluded=["logs"], reuse=True)
    stat = file_stat(str(run / "weights.bin"))
    # A digest recorded for the same size and time is taken as it is: the file is not read.
    manifest = json.loads((run / MANIFEST_FILENAME).read_text())
    manifest["files"]["weights.bin"] = "f" * 64
    (run / MANIFEST_FILENAME).write_text(json.dumps(manifest))
    assert known_digests(str(run)) == {"weights.bin": (*stat, "f" * 64)}
    assert write_manifest(str(run), {}, excluded=["logs"], reuse=True)["files"]["weights.bin"] == "f" * 64
    assert verify_manifest(str(run))[0].startswith("weights.bin has changed")
    # Another modification time: read again.
    os.utime(run / "weights.bin", ns=(stat[1] + 10**9, stat[1] + 10**9))
    written = write_manifest(str(run), {}, excluded=["logs"], reuse=True)
    assert written["files"] == file_digests(str(run), ["logs", MANIFEST_FILENAME])
    assert verify_manifest(str(run)) == []


def test_a_new_manifest_removes_the_signature_of_the_old_one(tmp_path):
    run = make_run(tmp_path / "run")
    write_manifest(str(run), {})
    (run / SIGNATURE_FILENAME).write_text("{}")
    assert verify_manifest(str(run)) == []  # the signature is never listed
    write_manifest(str(run), {})
    assert not (run / SIGNATURE_FILENAME).exists()


def test_a_path_stands_for_itself_or_for_its_numbered_versions(tmp_path):
    run = make_run(tmp_path / "run")
    assert manifest_directories(str(run)) == []
    write_manifest(str(run), {})
    assert manifest_directories(str(run)) == [str(run)]
    for version in ("10", "2", "tmp"):
        (tmp_path / "export" / version).mkdir(parents=True)
    assert manifest_directories(str(tmp_path / "export")) == [str(tmp_path / "export" / "2"),
                                                              str(tmp_path / "export" / "10")]
    assert manifest_directories(str(tmp_path / "missing")) == []


def make_version(directory):
    return write_files(directory, {"saved_model.pb": b"graph", "variables/variables.index": b"index"})


def test_digests_are_sha256_of_every_file_by_relative_path(tmp_path):
    version = make_version(tmp_path / "1")
    assert file_digests(str(version), ALWAYS_EXCLUDED) == {
        "saved_model.pb": hashlib.sha256(b"graph").hexdigest(),
        "variables/variables.index": hashlib.sha256(b"index").hexdigest(),
    }


def test_write_then_read_round_trips_and_the_manifest_excludes_itself(tmp_path):
    version = make_version(tmp_path / "1")
    written = write_manifest(str(version), {"version": 1, "training_step": 120})
    assert read_manifest(str(version)) == written
    assert written["format_version"] == 1 and written["training_step"] == 120
    assert MANIFEST_FILENAME not in written["files"] and len(written["files"]) == 2
    assert sorted(os.listdir(version)) == [MANIFEST_FILENAME, "saved_model.pb", "variables"]  # no temp file
    assert verify_manifest(str(version)) == []


def test_changed_missing_and_extra_files_are_each_reported(tmp_path):
    version = make_version(tmp_path / "1")
    write_manifest(str(version), {})
    (version / "saved_model.pb").write_bytes(b"graph, edited")
    (version / "variables" / "variables.index").unlink()
    (version / "extra.txt").write_text("x")
    problems = verify_manifest(str(version))
    assert len(problems) == 3
    assert problems[0] == "extra.txt is not in the manifest"
    assert problems[1].startswith("saved_model.pb has changed (SHA-256 ")
    assert problems[2] == "variables/variables.index is missing"


def test_a_missing_or_unreadable_manifest_is_a_problem(tmp_path):
    version = make_version(tmp_path / "1")
    assert read_manifest(str(version)) is None
    assert verify_manifest(str(version)) == ["manifest.json is missing"]
    (version / MANIFEST_FILENAME).write_text("{not json")
    assert verify_manifest(str(version))[0].startswith("manifest.json cannot be read")
    (version / MANIFEST_FILENAME).write_text(json.dumps({"format_version": 1}))
    assert verify_manifest(str(version)) == ["manifest.json has no 'files' map"]

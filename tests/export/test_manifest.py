"""The export manifest: digests of every file, and what a check finds when files change."""

import hashlib
import json
import os

from tfllm.export.manifest import MANIFEST_FILENAME, file_digests, read_manifest, verify_manifest, write_manifest


def make_version(directory):
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"graph")
    (directory / "variables" / "variables.index").write_bytes(b"index")
    return directory


def test_digests_are_sha256_of_every_file_by_relative_path(tmp_path):
    version = make_version(tmp_path / "1")
    assert file_digests(str(version)) == {
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

"""`tfllm verify`: a run dir and an export match their manifests until one byte of any file
changes, a file goes or one is added; each such file is named on a line of its own."""

import os
import shutil

import pytest

from tfllm import cli, lineage
from tfllm.manifest import read_manifest


@pytest.fixture
def run_copy(causal_lm_run, tmp_path):
    return shutil.copytree(causal_lm_run, tmp_path / "run")


@pytest.fixture
def export_copy(causal_lm_export, tmp_path):
    return shutil.copytree(causal_lm_export, tmp_path / "tiny")


def verify(capsys, *argv):
    """(exit status, stdout lines, stderr lines) of `tfllm verify ARGV`."""
    capsys.readouterr()
    status = cli.main(["verify", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def flip_one_byte(path):
    """Flips every bit of the byte in the middle of `path`; returns the original content."""
    content = path.read_bytes()
    middle = len(content) // 2
    path.write_bytes(content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1:])
    return content


def test_an_untouched_run_and_export_pass_with_one_ok_line(run_copy, export_copy, capsys):
    for path, manifest in ((run_copy, read_manifest(run_copy)), (export_copy, read_manifest(export_copy / "1"))):
        files = manifest["files"]
        status, out, err = verify(capsys, path)
        assert status == 0 and err == []
        assert out == [f"OK {path}: {len(files)} file(s) match " + (
            "manifest.json; not signed" if path == run_copy else "the manifest.json of 1 version(s); not signed")]


def test_the_run_manifest_covers_every_file_but_logs_and_eval(causal_lm_run):
    manifest = read_manifest(causal_lm_run)
    assert manifest["kind"] == "run" and manifest["excluded"] == ["eval", "logs"]
    on_disk = {os.path.relpath(os.path.join(root, name), causal_lm_run)
               for root, _, names in os.walk(causal_lm_run) for name in names}
    expected = {path for path in on_disk if path.split(os.sep)[0] not in ("logs", "eval", "manifest.json")}
    assert set(manifest["files"]) == expected
    assert {"config.yaml", "lineage.json", "metrics.jsonl", "corpus/stats.json", "tokenizer/tokenizer.json"} <= expected
    assert any(path.startswith("checkpoints/latest/ckpt-") for path in expected)


@pytest.mark.parametrize("which", ["run", "export"])
def test_one_flipped_byte_in_any_file_is_named_alone(which, run_copy, export_copy, capsys):
    base = run_copy if which == "run" else export_copy
    directory, prefix = (base, "") if which == "run" else (base / "1", "1/")
    files = sorted(read_manifest(directory)["files"])
    assert len(files) >= (15 if which == "run" else 4)
    for name in files:
        original = flip_one_byte(directory / name)
        status, out, err = verify(capsys, base)
        (directory / name).write_bytes(original)
        assert status == 2 and out == [], name
        assert len(err) == 2 and err[0].startswith(f"{prefix}{name} has changed (SHA-256 "), err
        assert err[1].startswith(f"tfllm verify: error: {base} does not match its manifest.json: 1 problem(s)")
    assert verify(capsys, base)[0] == 0


def test_a_deleted_and_an_added_file_are_each_named(run_copy, capsys):
    (run_copy / "tokenizer" / "tokenizer.json").unlink()
    (run_copy / "corpus" / "extra.tfrecord").write_bytes(b"x")
    status, _, err = verify(capsys, run_copy)
    assert status == 2
    assert err[:2] == ["corpus/extra.tfrecord is not in the manifest", "tokenizer/tokenizer.json is missing"]
    assert "2 problem(s)" in err[2] and len(err) == 3


def test_logs_and_evaluation_reports_may_change_after_training(run_copy, capsys):
    for events in (run_copy / "logs").rglob("*tfevents*"):
        flip_one_byte(events)
    (run_copy / "eval").mkdir(exist_ok=True)
    (run_copy / "eval" / "report.json").write_text("{}")
    assert verify(capsys, run_copy)[0] == 0


def test_a_path_without_a_manifest_is_one_line_exit_2(tmp_path, capsys):
    status, out, err = verify(capsys, tmp_path)
    assert status == 2 and out == [] and len(err) == 1 and "has no manifest.json" in err[0]


@pytest.fixture
def keys(tmp_path, capsys):
    """(private, public) key files of two fresh key pairs: "ours" and "other"."""
    made = {}
    for name in ("ours", "other"):
        assert cli.main(["keygen", "--out", str(tmp_path / name)]) == 0
        made[name] = (tmp_path / name / "signing_key.pem", tmp_path / name / "signing_key.pub.pem")
    assert oct(os.stat(made["ours"][0]).st_mode & 0o777) == "0o600"
    capsys.readouterr()
    return made


def test_a_signed_run_verifies_with_its_key_and_fails_with_another(run_copy, keys, capsys):
    assert cli.main(["sign", str(run_copy), "--key-file", str(keys["ours"][0])]) == 0
    status, out, _ = verify(capsys, run_copy, "--public-key", keys["ours"][1])
    assert status == 0 and out[0].startswith(f"OK {run_copy}: ") and "signed by sha256:" in out[0]
    status, _, err = verify(capsys, run_copy, "--public-key", keys["other"][1])
    assert status == 2 and err[0].startswith("manifest.json.sig was made by another key"), err
    assert len(err) == 2


def test_a_manifest_edited_after_signing_fails(export_copy, keys, capsys):
    assert cli.main(["sign", str(export_copy), "--key-file", str(keys["ours"][0])]) == 0
    manifest = export_copy / "1" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"task": "causal_lm"', '"task": "classify"'))
    status, _, err = verify(capsys, export_copy, "--public-key", keys["ours"][1])
    assert status == 2 and len(err) == 2
    assert err[0] == "1/manifest.json.sig does not match manifest.json: the manifest changed after it was signed"


def test_an_unsigned_directory_fails_when_a_signature_is_required(run_copy, keys, capsys):
    status, _, err = verify(capsys, run_copy, "--public-key", keys["ours"][1])
    assert status == 2 and err[0].startswith("manifest.json.sig is missing") and len(err) == 2


def test_a_directory_that_no_longer_matches_is_not_signed(run_copy, keys, capsys):
    flip_one_byte(run_copy / "config.yaml")
    assert cli.main(["sign", str(run_copy), "--key-file", str(keys["ours"][0])]) == 2
    assert "config.yaml has changed" in capsys.readouterr().err
    assert not (run_copy / "manifest.json.sig").exists()


def test_export_signs_as_it_writes_and_carries_the_run_lineage(causal_lm_run, keys, tmp_path, capsys):
    out = tmp_path / "signed"
    assert cli.main(["export", "--run-dir", causal_lm_run, "--out", str(out),
                     "--sign-key-file", str(keys["ours"][0])]) == 0
    assert {"manifest.json", "manifest.json.sig", "saved_model.pb"} <= set(os.listdir(out / "1"))
    assert read_manifest(out / "1")["lineage"] == lineage.read(causal_lm_run)
    assert verify(capsys, out, "--public-key", keys["ours"][1])[0] == 0


def test_a_bad_key_file_is_one_line_exit_2(run_copy, tmp_path, capsys):
    (tmp_path / "not-a-key.pem").write_text("hello")
    assert cli.main(["sign", str(run_copy), "--key-file", str(tmp_path / "not-a-key.pem")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is not an unencrypted PEM private key" in err[0]
    assert err[0].startswith(f"tfllm sign: error: --key-file {tmp_path / 'not-a-key.pem'} "), err[0]

"""A run's lineage.json: digests equal to those of the files themselves, the software versions,
what a run starts from, and a second start that never replaces a different lineage silently."""

import hashlib
import json
import os
import shutil

import keras
import pytest
import tensorflow as tf

import tfllm
from tfllm import lineage
from tfllm.digests import sha256_of_digests
from tfllm.manifest import MANIFEST_FILENAME
from tfllm.run import Run


def sha256(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def digests_under(directory):
    return {os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/"): sha256(os.path.join(root, name))
            for root, _, names in os.walk(directory) for name in names}


def test_a_trained_run_records_the_digests_of_its_corpus_config_and_tokenizer(causal_lm_run):
    recorded = lineage.read(causal_lm_run)
    corpus = digests_under(os.path.join(causal_lm_run, "corpus"))
    assert recorded["corpus"] == {"files": corpus, "sha256": sha256_of_digests(corpus)}
    assert any(name.startswith("train-") for name in corpus) and "stats.json" in corpus
    tokenizer = digests_under(os.path.join(causal_lm_run, "tokenizer"))
    assert recorded["tokenizer"] == {"files": tokenizer, "sha256": sha256_of_digests(tokenizer)}
    assert recorded["config"] == {"path": "config.yaml", "sha256": sha256(os.path.join(causal_lm_run, "config.yaml"))}
    # The session's run trains on a built-in corpus: the Python that ships it names it.
    assert recorded["inputs"]["data.path"]["path"] == "builtin:python-docs"
    assert recorded["inputs"]["data.val_path"] is None
    assert recorded["versions"]["tfllm"] == tfllm.__version__
    assert recorded["versions"]["tensorflow"] == tf.__version__
    assert recorded["versions"]["keras"] == keras.__version__
    assert recorded["parent"] is None and recorded["source"] is None and "previous" not in recorded


def test_the_combined_digest_is_that_of_a_sha256sum_listing():
    files = {"b.txt": "2" * 64, "a.txt": "1" * 64}
    listing = f"{'1' * 64}  a.txt\n{'2' * 64}  b.txt\n"
    assert sha256_of_digests(files) == hashlib.sha256(listing.encode()).hexdigest()


def test_a_file_directory_or_glob_input_records_each_file(tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.txt").write_text("alpha")
    (tmp_path / "data" / "sub" / "b.jsonl").write_text('{"text": "beta"}\n')
    (tmp_path / "data" / "ignored.bin").write_bytes(b"\0")  # not a corpus file: never read, never recorded
    directory = lineage.input_record(str(tmp_path / "data"))
    assert directory == {"path": str(tmp_path / "data"), "files": {
        str(tmp_path / "data" / "a.txt"): hashlib.sha256(b"alpha").hexdigest(),
        str(tmp_path / "data" / "sub" / "b.jsonl"): hashlib.sha256(b'{"text": "beta"}\n').hexdigest()}}
    assert lineage.input_record(str(tmp_path / "data" / "a.txt"))["files"] == {
        str(tmp_path / "data" / "a.txt"): hashlib.sha256(b"alpha").hexdigest()}
    assert list(lineage.input_record(str(tmp_path / "data" / "*.txt"))["files"]) == [str(tmp_path / "data" / "a.txt")]
    assert lineage.input_record(None) is None
    assert lineage.input_record(str(tmp_path / "gone.txt")) == {"path": str(tmp_path / "gone.txt"), "files": None}


def test_the_parent_is_recorded_by_its_lineage_and_manifest_digests(causal_lm_run, tmp_path):
    checkpoint = Run.open(causal_lm_run).checkpoints.latest
    record = lineage.parent_record(causal_lm_run, checkpoint)
    assert record == {"path": os.path.abspath(causal_lm_run), "checkpoint": os.path.abspath(checkpoint),
                      "lineage_sha256": sha256(os.path.join(causal_lm_run, lineage.LINEAGE_FILENAME)),
                      "manifest_sha256": sha256(os.path.join(causal_lm_run, MANIFEST_FILENAME))}
    # Without a manifest to pin its weights, the checkpoint's own files are.
    copy = shutil.copytree(causal_lm_run, tmp_path / "run")
    os.remove(copy / MANIFEST_FILENAME)
    copied = Run.open(str(copy)).checkpoints.latest
    files = lineage.parent_record(str(copy), copied)["checkpoint_files"]
    name = os.path.basename(copied)
    assert files == {f: sha256(os.path.join(os.path.dirname(copied), f))
                     for f in os.listdir(os.path.dirname(copied)) if f.startswith(name + ".")}
    assert {name + ".index"} < set(files)


def test_an_imported_checkpoint_is_recorded_by_the_files_an_import_reads(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    record = lineage.source_record("hf://org/name", str(tmp_path), ("*.json", "*.safetensors"))
    assert record == {"path": "hf://org/name", "directory": str(tmp_path), "files": {
        "config.json": hashlib.sha256(b"{}").hexdigest(), "model.safetensors": hashlib.sha256(b"weights").hexdigest()}}


@pytest.fixture
def run_copy(causal_lm_run, tmp_path):
    return Run(str(shutil.copytree(causal_lm_run, tmp_path / "run")))


def test_a_second_start_with_the_same_lineage_leaves_the_file_alone(run_copy):
    path = os.path.join(run_copy.path, lineage.LINEAGE_FILENAME)
    before, stamp = open(path, "rb").read(), os.stat(path).st_mtime_ns
    data = {"data.path": "builtin:python-docs", "data.val_path": None}
    assert lineage.record(run_copy.path, lineage.of_run(run_copy, data)) == []
    assert open(path, "rb").read() == before and os.stat(path).st_mtime_ns == stamp


def test_a_second_start_with_another_config_keeps_the_old_digest_under_previous(run_copy):
    first = lineage.read(run_copy.path)
    with open(run_copy.config_path, "a") as file:
        file.write("# steps raised\n")
    data = {"data.path": "builtin:python-docs", "data.val_path": None}
    assert lineage.record(run_copy.path, lineage.of_run(run_copy, data)) == ["config"]
    now = lineage.read(run_copy.path)
    assert now["config"]["sha256"] == sha256(run_copy.config_path) != first["config"]["sha256"]
    assert now["previous"] == [{"created": first["created"], "config": first["config"]}]


def test_a_reused_corpus_keeps_the_inputs_it_was_prepared_from(run_copy, tmp_path):
    # The run's corpus/ was made from these inputs; they are gone (moved, or changed) since.
    recorded = {"data.path": {"path": "corpus.txt", "files": {"corpus.txt": "0" * 64}}, "data.val_path": None}
    first = lineage.read(run_copy.path)
    with open(os.path.join(run_copy.path, lineage.LINEAGE_FILENAME), "w") as file:
        json.dump({**first, "inputs": recorded}, file)
    data = {"data.path": "corpus.txt", "data.val_path": None}
    assert lineage.of_run(run_copy, data)["inputs"] == recorded
    # Another corpus (prepared again) is recorded with the inputs as they are now.
    os.remove(os.path.join(run_copy.corpus_dir, "stats.json"))
    assert lineage.of_run(run_copy, data)["inputs"]["data.path"] == {"path": "corpus.txt", "files": None}


def test_the_export_manifest_carries_the_run_lineage(causal_lm_run, causal_lm_export):
    with open(os.path.join(causal_lm_export, "1", MANIFEST_FILENAME)) as file:
        manifest = json.load(file)
    assert manifest["lineage"] == lineage.read(causal_lm_run)
    assert manifest["run_manifest_sha256"] == sha256(os.path.join(causal_lm_run, MANIFEST_FILENAME))

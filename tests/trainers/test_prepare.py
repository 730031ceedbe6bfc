"""`tfllm prepare`: the data half of `tfllm train`, which a later train on the run dir reuses."""

import contextlib
import io
import json
import os
import re
import shutil

import pytest
import tensorflow as tf

from tests.trainers.run_testing import tiny
from tfllm import cli
from tfllm.data.corpus_stats import STATS_FILE
from tfllm.run import Run

DOCUMENTS = 40
# Documents between blank lines, each distinct, longer than data.min_chars and not ASCII.
TEXT = "\n\n".join(f"Document {i} tells of the model, the step {i * 7} and the token caf\u00e9."
                   for i in range(DOCUMENTS))
# The smallest training that reads the prepared run: 2 steps of a 1-layer model.
TRAIN = ["model.num_layers=1", "train.steps=2", "train.eval_every=2", "train.eval_batches=1", "train.log_every=1",
         "train.warmup_steps=1", "train.batch_size=4"]


def run_cli(*argv):
    """`(exit code, standard output, standard error)` of `tfllm ARGV`, run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(TEXT + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    """(run dir, standard output) of `tfllm prepare` on the tiny corpus. Tests that write into
    the run dir copy it first."""
    run_dir = str(tmp_path_factory.mktemp("prepared") / "run")
    code, out, err = run_cli("prepare", "--run-dir", run_dir, *tiny(corpus, data__vocab_size=40))
    assert code == 0, err
    return run_dir, out


def test_prepare_writes_the_corpus_tokenizer_and_config(prepared, corpus):
    run_dir, _ = prepared
    assert sorted(os.listdir(run_dir)) == ["config.yaml", "corpus", "lineage.json", "manifest.json", "tokenizer"]
    with open(os.path.join(run_dir, "corpus", STATS_FILE)) as f:
        stats = json.load(f)
    assert stats["documents"]["train"] + stats["documents"]["val"] == DOCUMENTS
    run = Run.open(run_dir)
    assert run.config.data.path == corpus and run.config.data.tokenizer == "char"
    assert 4 < run.tokenizer.vocabulary_size <= 40
    assert run.checkpoints.latest is None
    # Its lineage names the corpus it read, and its manifest checks.
    with open(os.path.join(run_dir, "lineage.json")) as f:
        assert corpus in json.dumps(json.load(f))
    assert run_cli("verify", run_dir)[0] == 0


def test_prepare_prints_a_summary_with_rates_and_no_carriage_return(prepared):
    _, out = prepared
    # The corpus is read in well under the 10 s between progress lines: the summary alone.
    summary = re.search(rf"^Read {DOCUMENTS} documents \([\d.]+ MB\) in [\d.]+ s: ([\d,]+) documents/s, "
                        r"[\d.,]+ MB/s$", out, re.MULTILINE)
    assert summary, out
    assert int(summary.group(1).replace(",", "")) > 0
    assert "\r" not in out
    assert out.splitlines()[-1].startswith(f"Prepared corpus/, tokenizer/ and config.yaml (with lineage.json and manifest.json) in {prepared[0]}")


def copy_of(run_dir, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    return copy


def files_of(run_dir):
    """(inode, mtime) of every file of the prepared corpus and tokenizer."""
    found = {}
    for part in ("corpus", "tokenizer"):
        for name in os.listdir(os.path.join(run_dir, part)):
            status = os.stat(os.path.join(run_dir, part, name))
            found[os.path.join(part, name)] = (status.st_ino, status.st_mtime_ns)
    return found


@pytest.mark.slow
def test_train_reuses_the_prepared_corpus_and_tokenizer(prepared, corpus, tmp_path):
    run_dir = copy_of(prepared[0], tmp_path)
    before = files_of(run_dir)
    code, out, err = run_cli("train", "--run-dir", run_dir, *tiny(corpus, data__vocab_size=40), *TRAIN)
    assert code == 0, err
    assert f"Reusing the prepared corpus in {os.path.join(run_dir, 'corpus')}" in out
    assert f"Reusing the tokenizer in {os.path.join(run_dir, 'tokenizer')}" in out
    assert "Read " not in out and "Trained a " not in out
    assert files_of(run_dir) == before
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest")).endswith("ckpt-2")
    assert Run.open(run_dir).config.model.num_layers == 1


def test_train_refuses_other_data_keys_in_one_line(prepared, corpus, tmp_path):
    run_dir = copy_of(prepared[0], tmp_path)
    before = files_of(run_dir)
    code, _, err = run_cli("train", "--run-dir", run_dir, *tiny(corpus, data__vocab_size=40, data__val_fraction=0.3),
                           *TRAIN)
    assert code == 2
    assert len(err.splitlines()) == 1 and "data.val_fraction=0.2 -> 0.3" in err, err
    assert files_of(run_dir) == before and "checkpoints" not in os.listdir(run_dir)


def test_preparing_again_reuses_what_is_there(prepared, corpus, tmp_path):
    run_dir = copy_of(prepared[0], tmp_path)
    before = files_of(run_dir)
    code, out, err = run_cli("prepare", "--run-dir", run_dir, *tiny(corpus, data__vocab_size=40))
    assert code == 0, err
    assert "Reusing the prepared corpus" in out and "Read " not in out
    assert files_of(run_dir) == before


@pytest.mark.parametrize("override, message", [
    ("data.nope=1", "unknown key 'data.nope'"),
    ("model.num_heads=3", "num_heads"),
    ("data.path={missing}", "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_dir(corpus, tmp_path, override, message):
    run_dir = tmp_path / "run"
    override = override.format(missing=tmp_path / "missing.txt")
    code, _, err = run_cli("prepare", "--run-dir", str(run_dir), *tiny(corpus), override)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfllm prepare: error: ") and message in lines[0], err
    assert not run_dir.exists()


def test_a_classify_run_gets_its_tokenizer_and_label_map(tmp_path):
    data = tmp_path / "labeled.jsonl"
    data.write_text("".join(json.dumps({"text": f"example {i} reads {'well' if i % 2 else 'badly'}",
                                        "label": "good" if i % 2 else "bad"}) + "\n" for i in range(20)))
    run_dir = str(tmp_path / "run")
    code, out, err = run_cli("prepare", "--run-dir", run_dir, "model.task=classify", f"data.path={data}",
                             "data.tokenizer=char", "data.vocab_size=40", "data.val_fraction=0.25")
    assert code == 0, err
    assert sorted(os.listdir(run_dir)) == ["config.yaml", "labels.json", "lineage.json", "manifest.json", "tokenizer"]
    assert Run.open(run_dir).labels.labels == ["bad", "good"]
    assert "classify: 15 training and 5 validation examples" in out

"""End to end: `tfllm train` on the built-in corpus, tiny sizes, to the samples it prints. `tfllm
generate` of a trained run (seeds, greedy decoding) is in tests/trainers/test_generate.py."""

import collections
import contextlib
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tfllm import cli
from tfllm.data.corpus import iter_texts
from tfllm.tokenizers import load_tokenizer

TINY = [
    "data.tokenizer=char", "data.vocab_size=96",
    "model.num_layers=2", "model.num_heads=2", "model.hidden_dim=32", "model.intermediate_dim=64",
    "model.seq_len=32", "train.batch_size=16", "train.steps=120", "train.eval_every=60",
    "train.eval_batches=4", "train.log_every=20", "train.warmup_steps=5", "train.learning_rate=1e-2",
    "train.samples=1", "train.sample_tokens=8", "train.precision=float32",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run dir, console output) of the tiny run."""
    run_dir = str(tmp_path_factory.mktemp("run") / "tiny")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert cli.main(["train", "--run-dir", run_dir, *TINY]) == 0
    return run_dir, console.getvalue()


@pytest.fixture(scope="module")
def run_dir(trained):
    return trained[0]


def test_a_generating_run_ends_with_its_samples(trained):
    # train.samples=1: one sample of the first prompt, at most 8 new tokens (characters here).
    console = trained[1]
    samples = console[console.index("Samples:\n") + len("Samples:\n") : console.index("Run written to ")]
    header, sample = samples.split("\n", 1)
    assert header == "--- 'The '"
    assert sample.startswith("The ") and len(sample) <= len("The ") + 8 + 1, sample


def unigram_entropy(run_dir, split):
    """Entropy (nats) of the token distribution of a split: the loss of a context-free model."""
    tokenizer = load_tokenizer(os.path.join(run_dir, "tokenizer"))
    counts = collections.Counter()
    for text in iter_texts(os.path.join(run_dir, "corpus"), split):
        counts.update(tokenizer.tokenize(tf.constant([text])).flat_values.numpy().tolist())
        counts[1] += 1  # the EOS after every document
    p = np.array(list(counts.values()), dtype=np.float64) / sum(counts.values())
    return float(-(p * np.log(p)).sum())


@pytest.mark.slow
def test_run_dir_holds_everything(run_dir):
    names = set(os.listdir(run_dir))
    assert {"config.yaml", "corpus", "tokenizer", "checkpoints", "logs", "metrics.jsonl"} <= names
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest")).endswith("ckpt-120")
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "best")) is not None


@pytest.mark.slow
def test_metrics_jsonl_and_validation_below_unigram_entropy(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [20, 40, 60, 80, 100, 120]
    for r in records:
        assert {"step", "loss", "learning_rate", "tokens_per_sec"} <= set(r)
        assert math.isfinite(r["loss"]) and r["tokens_per_sec"] > 0
    evaluated = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evaluated] == [60, 120]
    assert evaluated[-1]["val_perplexity"] == pytest.approx(math.exp(evaluated[-1]["val_loss"]))
    assert records[-1]["loss"] < records[0]["loss"] - 0.25
    assert evaluated[-1]["val_loss"] < unigram_entropy(run_dir, "val")


@pytest.mark.slow
def test_tensorboard_holds_train_and_val_scalars(run_dir):
    acc = event_accumulator.EventAccumulator(
        os.path.join(run_dir, "logs"), size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    steps = {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}
    assert steps["train/loss"] == [20, 40, 60, 80, 100, 120]
    assert steps["train/learning_rate"] == steps["train/tokens_per_sec"] == steps["train/loss"]
    assert steps["val/loss"] == steps["val/perplexity"] == [60, 120]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tfllm.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "train.stepz=3"], "did you mean 'train.steps'"),
        (["train", "model.num_heads=3"], "model.num_heads=3 is invalid: it must divide model.hidden_dim=128"),
        (["train", "--config", "missing.yaml"], "config missing.yaml not found"),
        (["train", "data.path=/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
        (["generate", "--run-dir", "/nonexistent/run", "--prompt", "x"], "run dir /nonexistent/run does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfllm ") and "\n" not in err and message in err


def test_the_installed_command_exits_2_without_traceback(tmp_path):
    result = run_cli("train", "model.position=alibi", cwd=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("tfllm train: error: ")
    assert "model.position='alibi'" in result.stderr and "Traceback" not in result.stderr


def test_bad_input_leaves_existing_run_files_untouched(tmp_path, monkeypatch):
    # In process: a subprocess would only add the start of TensorFlow (the installed command's
    # exit code is the test above).
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "config.yaml").write_text("keep: me\n")
    assert cli.main(["train", "--run-dir", str(run_dir), "data.path=/nonexistent.txt"]) == 2
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (run_dir / "config.yaml").read_text() == "keep: me\n"

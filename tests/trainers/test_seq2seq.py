"""`tfllm train/generate/evaluate` of a seq2seq run, and `train.init_from` into one."""

import json
import os

import numpy as np
import pytest

from tests.trainers.run_testing import (SEQ2SEQ_LABEL_SMOOTHING, reversal_pairs, train_from, trained_model,
                                        write_pairs)
from tfllm import cli
from tfllm.run import Run
from tfllm.trainers import evaluate


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Reversal pairs drawn with another seed, as prompt/reference pairs."""
    path = tmp_path_factory.mktemp("held_out") / "held_out.jsonl"
    return write_pairs(path, reversal_pairs(64, seed=1), ("prompt", "reference"))


@pytest.fixture(scope="module")
def report(seq2seq_run, held_out):
    return evaluate.main(seq2seq_run, held_out, batch_size=64,
                         decoding={"strategy": "greedy", "max_new_tokens": 11})


def test_reversing_words_reaches_bleu_90_on_held_out_pairs(report):
    metrics = report["metrics"]
    assert metrics["bleu"] >= 90 and metrics["chrf"] >= 90 and metrics["rougeL"] >= 0.9, metrics
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]))
    assert report["examples"] == 64 and report["bleu_signature"].startswith("nrefs:1")


def test_training_smooths_the_labels_and_evaluation_does_not(seq2seq_run, report):
    """A smoothed cross-entropy cannot fall below the entropy of the smoothed target distribution;
    the references' loss, unsmoothed, falls far below it."""
    run = Run.open(seq2seq_run)
    smoothing, vocabulary = SEQ2SEQ_LABEL_SMOOTHING, run.tokenizer.vocabulary_size
    target = 1 - smoothing + smoothing / vocabulary
    floor = -(target * np.log(target) + (vocabulary - 1) * smoothing / vocabulary * np.log(smoothing / vocabulary))
    with open(os.path.join(seq2seq_run, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["loss"] >= floor and last["val_loss"] >= floor
    assert report["metrics"]["loss"] < floor / 4


def test_the_own_training_data_is_evaluated_on_its_validation_split(seq2seq_run):
    data = os.path.join(os.path.dirname(seq2seq_run), "train.jsonl")
    report = evaluate.main(seq2seq_run, data, metrics=["loss"], batch_size=64,
                           decoding={"strategy": "greedy", "max_new_tokens": 11})
    assert report["examples"] == 64 and report["split"].startswith("validation")  # 10% of 640
    assert report["metrics"]["loss"] < 0.5


def test_generate_prints_each_target_alone(seq2seq_run, capsys):
    sources = ["a b c", "h g f e"]
    argv = ["generate", "--run-dir", seq2seq_run, "--strategy", "greedy", "--max-new-tokens", "11"]
    assert cli.main([*argv, *(x for source in sources for x in ("--prompt", source))]) == 0
    assert capsys.readouterr().out.split("-" * 40 + "\n") == ["c b a\n", "e f g h\n", ""]
    assert cli.main([*argv, "--strategy", "beam", "--prompt", sources[1]]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "e f g h"


def test_init_from_a_seq2seq_run_continues_it_on_a_new_data_set(seq2seq_run, tmp_path):
    data = write_pairs(tmp_path / "new.jsonl", reversal_pairs(40, seed=7))
    continued = train_from(seq2seq_run, str(tmp_path / "run"), data)
    pretrained = trained_model(seq2seq_run)
    assert len(continued.weights) == len(pretrained.weights)
    for got, expected in zip(continued.weights, pretrained.weights):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6, err_msg=got.path)

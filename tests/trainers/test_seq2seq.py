"""`tfllm train/generate/evaluate` of a seq2seq run, and `train.init_from` into one."""

import os

import numpy as np
import pytest

from tests.trainers.run_testing import SEQ2SEQ_RUN, reversal_pairs, write_pairs
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


def weights_of(run_dir):
    model, _ = Run.open(run_dir).load_model()
    return model


def train_from(pretrained, run_dir, data, *overrides):
    """One optimizer step at a learning rate too small to move a weight by 1e-6, from `pretrained`,
    with a config that sets only the task (the pretrained run fixes the shape and tokenizer)."""
    config = os.path.join(os.path.dirname(run_dir), "seq2seq.yaml")
    with open(config, "w") as f:
        f.write("model:\n  task: seq2seq\n")
    assert cli.main(["train", "--config", config, "--run-dir", run_dir, f"data.path={data}",
                     f"train.init_from={pretrained}", "train.steps=1", "train.eval_every=1", "train.eval_batches=1",
                     "train.batch_size=8", "train.warmup_steps=0", "train.learning_rate=1e-9",
                     "train.min_learning_rate=0", "train.samples=0", *overrides]) == 0
    return weights_of(run_dir)


def test_init_from_a_seq2seq_run_continues_it_on_a_new_data_set(seq2seq_run, tmp_path):
    data = write_pairs(tmp_path / "new.jsonl", reversal_pairs(40, seed=7))
    continued = train_from(seq2seq_run, str(tmp_path / "run"), data)
    pretrained = weights_of(seq2seq_run)
    assert len(continued.weights) == len(pretrained.weights)
    for got, expected in zip(continued.weights, pretrained.weights):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6, err_msg=got.path)


def test_init_from_a_masked_lm_loads_its_backbone_into_the_encoder(tmp_path):
    corpus = tmp_path / "words.txt"
    corpus.write_text("\n\n".join(" ".join(source for source, _ in reversal_pairs(6, seed=i)) for i in range(40)))
    masked_lm_dir = str(tmp_path / "masked_lm")
    shape = [key for key in SEQ2SEQ_RUN if key.startswith(("model.num_", "model.hidden", "model.inter", "model.seq"))]
    assert cli.main(["train", "--run-dir", masked_lm_dir, "model.task=masked_lm", f"data.path={corpus}",
                     "data.tokenizer=char", "data.vocab_size=32", "data.blank_line_documents=true", "data.min_chars=0",
                     *shape, "train.steps=2", "train.batch_size=4", "train.eval_every=2", "train.eval_batches=1",
                     "train.samples=0", "train.precision=float32"]) == 0
    data = write_pairs(tmp_path / "pairs.jsonl", reversal_pairs(40, seed=7))
    seq2seq = train_from(masked_lm_dir, str(tmp_path / "seq2seq"), data)
    masked_lm = weights_of(masked_lm_dir)
    encoder = seq2seq.backbone.encoder.weights
    assert [w.path for w in encoder] == [w.path for w in masked_lm.backbone.weights]
    for got, expected in zip(encoder, masked_lm.backbone.weights):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6, err_msg=got.path)
    # The decoder starts fresh: its blocks have no counterpart in the masked LM.
    decoder = [w for w in seq2seq.backbone.weights if w.path.startswith("decoder_layer_")]
    assert decoder and all(w.path.split("/")[0] not in {m.path.split("/")[0] for m in masked_lm.weights}
                           for w in decoder)

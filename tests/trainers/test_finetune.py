"""Masked-LM pretraining, then fine-tuning into a classifier and a prompt -> completion model.

Tiny runs on the built-in corpora: an encoder pretrained on CPython's documentation is fine-tuned
to tell which standard-library package a passage of source comes from, and the session's tiny
causal LM (`causal_lm_run`) to complete "Python help topic" prompts.
"""

import collections
import json
import os
import types

import keras
import numpy as np
import pytest
from pydoc_data.topics import topics
import tensorflow as tf

from tests.trainers.run_testing import CAUSAL_LM_RUN, trained_model
from tfllm import cli, config as config_lib
from tfllm.run import Run
from tfllm.tasks import TASKS, build_model
from tfllm.tokenizers import load_tokenizer
from tfllm.trainers import init_from
from tfllm.trainers.callbacks import make_callbacks
from tfllm.trainers.prepare_data import read_examples
from tfllm.trainers.resume import Resume

SMALL = ["model.num_layers=2", "model.num_heads=2", "model.hidden_dim=64", "model.intermediate_dim=128",
         "model.seq_len=64", "train.log_every=10", "train.warmup_steps=10", "train.precision=float32"]
BERT = ["--config", "configs/bert-tiny.yaml", "data.vocab_size=512", *SMALL, "train.steps=60",
        "train.eval_every=30", "train.eval_batches=2", "train.learning_rate=3e-3"]
# One evaluation, at the end: the test reads only the last; 160 steps reach 0.61 accuracy against
# a majority class of 0.25 (240 steps: 0.64).
CLASSIFY = ["--config", "configs/classify-tiny.yaml", "data.vocab_size=512", *SMALL, "train.steps=160",
            "train.eval_every=160", "train.eval_batches=10", "train.learning_rate=3e-3",
            "train.min_learning_rate=3e-4", "train.early_stopping_patience=0"]
# From the session's `causal_lm_run`, which fixes the shape and the tokenizer (a 32-token context).
SFT = ["--config", "configs/sft-tiny.yaml", "data.val_fraction=0.2", "train.log_every=10", "train.warmup_steps=10",
       "train.precision=float32", "train.batch_size=8", "train.steps=40", "train.eval_every=20",
       "train.eval_batches=2", "train.learning_rate=3e-3"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train(run_dir, overrides):
    previous = os.getcwd()
    os.chdir(REPO)  # the configs/ paths
    try:
        assert cli.main(["train", "--run-dir", run_dir, *overrides]) == 0
    finally:
        os.chdir(previous)
    return run_dir


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """The masked LM pretrained on a third of `builtin:python-docs` (its WordPiece vocabulary,
    learned in pure Python, takes most of a run on the whole corpus)."""
    directory = tmp_path_factory.mktemp("bert")
    corpus = directory / "docs.txt"
    corpus.write_text("\n\n".join(list(topics.values())[::3]), encoding="utf-8")
    return train(str(directory / "run"), [*BERT, f"data.path={corpus}", "data.blank_line_documents=true"])


@pytest.fixture(scope="module")
def classify_run(bert_run, tmp_path_factory):
    return train(str(tmp_path_factory.mktemp("classify") / "run"), [*CLASSIFY, f"train.init_from={bert_run}"])


@pytest.fixture(scope="module")
def sft_run(causal_lm_run, tmp_path_factory):
    return train(str(tmp_path_factory.mktemp("sft") / "run"), [*SFT, f"train.init_from={causal_lm_run}"])


def test_a_seq2seq_run_from_a_masked_lm_takes_its_backbone_as_encoder(bert_run):
    # The model `tfllm train` starts a seq2seq run with (trainers/train.py), short of training it:
    # a config that sets only the task and `train.init_from`, the pretrained run fixing the rest.
    # Training from `train.init_from` is in tests/trainers/test_seq2seq.py (from a seq2seq run).
    config = config_lib.load_config(None, ["model.task=seq2seq", f"train.init_from={bert_run}"])
    config, pretrained = init_from.resolve(config, {"model.task", "train.init_from"})
    task = TASKS["seq2seq"]
    seq2seq = build_model(config, pretrained.tokenizer.vocabulary_size,
                          task.attends_causally(pretrained.backbone_causal))
    assert init_from.load_backbone(seq2seq, pretrained, task) == pretrained.checkpoints.preferred()
    masked_lm = trained_model(bert_run)
    encoder = seq2seq.backbone.encoder.weights
    assert [w.path for w in encoder] == [w.path for w in masked_lm.backbone.weights]
    for got, expected in zip(encoder, masked_lm.backbone.weights):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6, err_msg=got.path)
    # The decoder starts fresh: its blocks have no counterpart in the masked LM.
    decoder = [w for w in seq2seq.backbone.weights if w.path.startswith("decoder_layer_")]
    assert decoder and not {w.path.split("/")[0] for w in decoder} & {w.path.split("/")[0] for w in masked_lm.weights}


@pytest.mark.slow
def test_masked_lm_loss_falls_and_reports_masked_accuracy(bert_run):
    records = metrics(bert_run)
    evaluated = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evaluated] == [30, 60]
    assert records[-1]["loss"] < records[0]["loss"] - 0.5
    assert evaluated[-1]["val_loss"] < evaluated[0]["val_loss"]
    # Masked tokens only: a uniform guess over 512 ids would score 0.002.
    assert 0.02 < evaluated[-1]["val_accuracy"] < 1.0


@pytest.mark.slow
def test_classifier_from_pretrained_encoder_beats_the_majority_class(classify_run):
    config = config_lib.load_config(os.path.join(classify_run, "config.yaml"))
    val = read_examples(config, TASKS[config.model.task]).val
    counts = collections.Counter(label for _, label in val)
    majority = max(counts.values()) / len(val)
    assert len(counts) == 5 and len(val) == 300
    # eval_batches x batch_size covers the whole validation split.
    accuracy = metrics(classify_run)[-1]["val_accuracy"]
    assert accuracy > majority + 0.25, (accuracy, majority)
    with open(os.path.join(classify_run, "backbone.json")) as f:
        assert json.load(f)["causal"] is False


@pytest.mark.slow
def test_init_from_copies_every_backbone_tensor_exactly(bert_run, classify_run):
    config = config_lib.load_config(os.path.join(classify_run, "config.yaml"))
    vocabulary_size = load_tokenizer(os.path.join(classify_run, "tokenizer")).vocabulary_size
    model = build_model(config, vocabulary_size, False, num_classes=5)
    checkpoint = init_from.load_backbone(model, Run.open(bert_run), TASKS["classify"])
    reader = tf.train.load_checkpoint(checkpoint)
    backbone = model.backbone.weights
    assert len(backbone) > 20
    # The pretrained model's weights start with its backbone's, in order (checkpoint keys are positions).
    for i, weight in enumerate(backbone):
        stored = reader.get_tensor(f"model/variables_in_order/{i:05d}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_array_equal(weight.numpy(), stored)
    # The classification head is new, not copied.
    assert model.weights[len(backbone)].shape == (64, 5)


@pytest.mark.slow
def test_sft_learns_completions_and_evaluates_with_bleu(sft_run, tmp_path, capsys):
    records = metrics(sft_run)
    assert records[-1]["loss"] < records[0]["loss"]
    config = config_lib.load_config(os.path.join(sft_run, "config.yaml"))
    val = read_examples(config, TASKS[config.model.task]).val
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "reference": c}) + "\n" for p, c in val[:4]))
    capsys.readouterr()
    code = cli.main(["evaluate", "--run-dir", sft_run, "--data", str(pairs), "--max-new-tokens", "8"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 4
    assert 0.0 <= report["metrics"]["bleu"] <= 100.0 and 0.0 <= report["metrics"]["rouge1"] <= 1.0


def one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.slow
@pytest.mark.parametrize("changes, expected", [
    (["model.task=masked_lm"], "is a causal_lm run; a masked_lm run"),
    (["model.hidden_dim=32"], "model.hidden_dim=32 (pretrained: 16)"),
    (["data.vocab_size=96"], "data.vocab_size=96 (pretrained: 64)"),
])
def test_init_from_another_task_or_shape_is_refused(causal_lm_run, changes, expected, tmp_path, capsys):
    # The pretrained run's own overrides, but for `changes`.
    overrides = [*CAUSAL_LM_RUN, f"train.init_from={causal_lm_run}", *changes]
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *overrides]) == 2
    assert expected in one_error_line(capsys)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.mark.parametrize("train_records, val_records, expected", [
    ([{"text": "a b c"}], None, 'train.jsonl:1: no "label" key'),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": 1}], None, "labels mix str and int: "),
    ([{"text": "a", "label": "x"}, {"text": "d", "label": "z"}] * 2,
     [{"text": "b", "label": "x"}, {"text": "c", "label": "y"}], "label 'y' at "),
    ([{"text": "a", "label": "x"}] * 4, None, "every training example has the label 'x'; a classifier needs at least 2"),
])
def test_bad_labels_name_file_and_line(train_records, val_records, expected, tmp_path, capsys):
    overrides = ["model.task=classify", f"data.path={write_jsonl(tmp_path / 'train.jsonl', train_records)}",
                 "data.tokenizer=char", "train.batch_size=2"]
    if val_records:
        overrides.append(f"data.val_path={write_jsonl(tmp_path / 'val.jsonl', val_records)}")
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *overrides]) == 2
    message = one_error_line(capsys)
    assert expected in message
    if val_records:
        assert "val.jsonl:2" in message


@pytest.mark.parametrize("rate", ["0", "1", "1.5", "-0.1"])
def test_mask_rate_outside_zero_one_is_refused(rate, tmp_path, capsys):
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), "model.task=masked_lm",
                     f"data.mask_rate={rate}"]) == 2
    assert f"data.mask_rate={float(rate)!r} is invalid: use a value in (0, 1)" in one_error_line(capsys)


class ScriptedAccuracy(keras.callbacks.Callback):
    def __init__(self, values):
        super().__init__()
        self.values, self.kernels = list(values), []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = self.values[epoch]
        self.kernels.append(self.model.layers[-1].kernel.numpy().copy())


def test_early_stopping_on_the_monitored_metric_restores_the_best_weights(tmp_path):
    config = config_lib.load_config(None, ["model.task=classify", "train.early_stopping_patience=2",
                                           "train.steps=100"])
    session = types.SimpleNamespace(config=config, run=Run(str(tmp_path)), chief=False, resume=Resume(),
                                    strategy=tf.distribute.get_strategy())
    callbacks, _, _ = make_callbacks(session, tokens_per_step=1, flops_per_token=0, peak_flops=0)
    scripted = ScriptedAccuracy([0.5, 0.9, 0.6, 0.4, 0.95, 0.99])
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(32, 2)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(8).repeat()
    history = model.fit(data, epochs=6, steps_per_epoch=2, callbacks=[scripted, *callbacks], verbose=0)
    # val_accuracy (classify's monitor, higher is better) peaked at epoch 2; two worse epochs stop.
    assert len(history.history["loss"]) == 4
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(), scripted.kernels[1])

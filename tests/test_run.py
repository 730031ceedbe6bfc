"""The run-directory object: the layout, what it reads, its checkpoints by step, and its writes."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm import config as config_lib
from tfllm.callbacks.checkpointer import variables_in_order
from tfllm.data.labeled import LabelMap
from tfllm.errors import UserError
from tfllm.precision import global_policy
from tfllm.run import Run
from tfllm.tokenizers import train_tokenizer

TEXTS = ["the model reads text", "every step", "a classifier labels texts"]


def make_run(path, task="causal_lm", labels=None, backbone=None):
    """A run dir with a config (tiny model), a char tokenizer, and optional labels/backbone.json."""
    run = Run(str(path)).create()
    overrides = [f"model.task={task}", "model.num_layers=1", "model.num_heads=2", "model.hidden_dim=8",
                 "model.intermediate_dim=16", "model.seq_len=8", "data.tokenizer=char", "data.vocab_size=40"]
    run.save_config(config_lib.load_config(None, overrides))
    train_tokenizer("char", TEXTS, 40).save(run.tokenizer_dir)
    if labels:
        run.save_labels(LabelMap(labels))
    if backbone is not None:
        run.save_backbone_info("elsewhere", backbone)
    return Run.open(str(path))


def save_checkpoints(run, model, steps, best_step):
    """Checkpoints at `steps` in latest/ (the weights scaled by the step) and `best_step` in best/."""
    # The model part of a training checkpoint: what `Run.load_model` restores.
    checkpoint = tf.train.Checkpoint(model=variables_in_order(model.weights))
    latest = tf.train.CheckpointManager(checkpoint, os.path.join(run.checkpoints_dir, "latest"), max_to_keep=5)
    best = tf.train.CheckpointManager(checkpoint, os.path.join(run.checkpoints_dir, "best"), max_to_keep=1)
    saved = {}
    for step in steps:
        for w in model.weights:
            w.assign(tf.fill(w.shape, float(step)))
        latest.save(checkpoint_number=step)
        if step == best_step:
            best.save(checkpoint_number=step)
        saved[step] = [w.numpy() for w in model.weights]
    return saved


def test_the_layout_is_the_documented_one(tmp_path):
    run = Run(str(tmp_path))
    names = {run.config_path: "config.yaml", run.corpus_dir: "corpus", run.tokenizer_dir: "tokenizer",
             run.labels_path: "labels.json", run.backbone_path: "backbone.json", run.checkpoints_dir: "checkpoints",
             run.logs_dir: "logs", run.metrics_path: "metrics.jsonl", run.eval_dir: "eval"}
    for path, name in names.items():
        assert path == os.path.join(str(tmp_path), name)


def test_open_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Run.open(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a run dir"):
        Run.open(str(tmp_path / "file"))
    with pytest.raises(UserError, match=r"config.yaml is missing; .* is not a tfllm run dir"):
        Run.open(str(tmp_path))


def test_config_tokenizer_labels_and_attention(tmp_path):
    causal = make_run(tmp_path / "lm")
    assert causal.config.model.seq_len == 8 and causal.task.name == "causal_lm"
    assert causal.tokenizer.vocabulary_size == 4 + len(set("".join(TEXTS)))
    assert causal.labels is None and causal.backbone_causal
    classify = make_run(tmp_path / "classify", "classify", labels=["no", "yes"], backbone=False)
    assert classify.labels.labels == ["no", "yes"] and classify.backbone_causal is False
    assert make_run(tmp_path / "scratch", "classify", labels=["a", "b"]).backbone_causal is True
    assert make_run(tmp_path / "mlm", "masked_lm", backbone=True).backbone_causal is False


def test_checkpoints_by_step_and_the_weights_of_each(tmp_path):
    run = make_run(tmp_path / "run")
    assert run.checkpoints.steps() == [] and run.checkpoints.preferred() is None
    with pytest.raises(UserError, match="has no checkpoint under checkpoints/; train it first"):
        run.load_model()
    saved = save_checkpoints(run, run.build_model(), steps=[2, 4, 6], best_step=4)
    assert run.checkpoints.steps() == [2, 4, 6]
    assert run.checkpoints.latest.endswith(os.path.join("latest", "ckpt-6"))
    assert run.checkpoints.best.endswith(os.path.join("best", "ckpt-4"))
    assert run.checkpoints.preferred() == run.checkpoints.best
    assert run.checkpoints.preferred(prefer_best=False) == run.checkpoints.latest
    assert run.checkpoints.at(2).endswith("ckpt-2") and run.checkpoints.at(3) is None
    model, checkpoint = run.load_model()
    assert checkpoint == run.checkpoints.best
    for restored, expected in zip(model.weights, saved[4]):
        np.testing.assert_array_equal(restored.numpy(), expected)
    model, _ = run.load_model(prefer_best=False)
    np.testing.assert_array_equal(model.weights[0].numpy(), saved[6][0])


def test_writes_leave_whole_files_and_nothing_else(tmp_path):
    run = make_run(tmp_path / "run")
    before = set(os.listdir(run.path))
    run.write_eval_report("held_out", {"metrics": {"loss": 1.5}}, [{"prompt": "a", "completion": "b"}])
    assert set(os.listdir(run.path)) == before | {"eval"}
    assert sorted(os.listdir(run.eval_dir)) == ["held_out.json", "held_out.predictions.jsonl"]
    with open(os.path.join(run.eval_dir, "held_out.json")) as f:
        assert json.load(f) == {"metrics": {"loss": 1.5}}

    copy = Run(str(tmp_path / "copy")).create()
    copy.copy_tokenizer(run)
    assert sorted(os.listdir(copy.path)) == ["tokenizer"]
    assert copy.tokenizer.tokenize(["every"]).to_list() == run.tokenizer.tokenize(["every"]).to_list()


def test_drop_logs_after_a_step_keeps_the_steps_before_it(tmp_path):
    run = make_run(tmp_path / "run")
    with open(run.metrics_path, "w") as f:
        f.writelines(json.dumps({"step": step, "loss": 1.0}) + "\n" for step in (5, 10, 15))
    writer = tf.summary.create_file_writer(run.logs_dir)
    with writer.as_default():
        for step in (5, 10, 15):
            tf.summary.scalar("train/loss", float(step), step=step)
    writer.close()
    run.drop_logs_after(10)
    with open(run.metrics_path) as f:
        assert [json.loads(line)["step"] for line in f] == [5, 10]
    (events,) = [os.path.join(run.logs_dir, name) for name in os.listdir(run.logs_dir)]
    steps = [tf.compat.v1.Event.FromString(r.numpy()).step for r in tf.data.TFRecordDataset(events)]
    assert max(steps) == 10 and 5 in steps
    assert sorted(os.listdir(run.logs_dir)) == [os.path.basename(events)]


def test_a_first_start_that_fails_on_bad_input_leaves_nothing_behind(tmp_path):
    fresh = Run(str(tmp_path / "fresh"))
    with pytest.raises(UserError):
        with fresh.first_start():
            fresh.create()
            train_tokenizer("char", TEXTS, 40).save(fresh.tokenizer_dir)
            raise UserError("bad input")
    assert not os.path.exists(fresh.path)

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        with Run(str(existing)).first_start():
            Run(str(existing)).save_labels(LabelMap(["a", "b"]))
            raise UserError("bad input")
    assert sorted(os.listdir(existing)) == ["notes.txt"]

    # A run that already trained keeps everything, and any other error leaves the files to look at.
    run = make_run(tmp_path / "run")
    before = sorted(os.listdir(run.path))
    with pytest.raises(UserError):
        with run.first_start():
            run.write_eval_report("x", {})
            raise UserError("bad input")
    assert sorted(os.listdir(run.path)) == sorted(before + ["eval"])
    with pytest.raises(RuntimeError):
        with fresh.first_start():
            fresh.create()
            raise RuntimeError("a bug")
    assert os.path.isdir(fresh.path)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_a_servable_model_computes_in_float32_whatever_global_policy_a_training_run_left(causal_lm_run, precision):
    """`tfllm train` in the same process leaves its policy (mixed_bfloat16 on CPUs with
    AVX512_BF16): an export or a generation after it must not compute in bfloat16 unasked."""
    with global_policy("mixed_bfloat16"):
        model, _ = Run.open(causal_lm_run).load_servable_model(precision)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert {layer.compute_dtype for layer in model._flatten_layers()} == {"float32"}
    assert {weight.dtype for weight in model.weights} <= {"float32", "int8"}

"""`train.lora_rank`: fine-tuning through adapters on a frozen pretrained run, from training to
export; each task that fine-tunes takes it.

The base is a copy of the session's `causal_lm_run`; the LoRA run completes prompts (`sft` on
`builtin:python-docs-topics`) with adapters on the query, value and embedding projections.
"""

import contextlib
import io
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.trainers.run_testing import REPO
from tfllm import cli, lora
from tfllm.callbacks.checkpointer import base_record, read_base, variables_in_order
from tfllm.export.generation_module import GenerationModule
from tfllm.run import Run, load_pretrained

SFT_CONFIG = os.path.join(REPO, "configs", "sft-tiny.yaml")
SHORT = ["train.steps=4", "train.eval_every=2", "train.eval_batches=1", "train.batch_size=4", "train.samples=0",
         "train.early_stopping_patience=0", "train.warmup_steps=1", "train.learning_rate=2e-2",
         "train.precision=float32"]
LORA = ["train.lora_rank=4", "train.lora_alpha=8", "train.lora_targets=query,value,embedding"]
TEXTS = ["Python help topic: lists", "def f(x):"]


def train(args):
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        code = cli.main(["train", *args])
    assert code == 0, console.getvalue()[-2000:]
    return console.getvalue()


@pytest.fixture(scope="module")
def base(causal_lm_run, tmp_path_factory):
    """A copy of the session's tiny causal LM, which these tests may change."""
    path = str(tmp_path_factory.mktemp("lora") / "base")
    shutil.copytree(causal_lm_run, path)
    return path


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("lora") / "run")
    console = train(["--config", SFT_CONFIG, "--run-dir", run_dir, f"train.init_from={base}", *SHORT, *LORA])
    return run_dir, console


@pytest.fixture(scope="module")
def float_export(lora_run, tmp_path_factory):
    """`tfllm export` of the LoRA run (float32, `--quantize none`, the default): EXPORT_DIR/1/."""
    out = str(tmp_path_factory.mktemp("lora") / "export")
    assert cli.main(["export", "--run-dir", lora_run[0], "--out", out]) == 0
    return os.path.join(out, "1")


def logits(model, texts, tokenizer):
    ids = tokenizer.tokenize(tf.constant(texts)).to_tensor()
    return model({"token_ids": ids, "padding_mask": tf.cast(ids > 0, tf.int32)}).numpy()


def test_the_run_says_what_trains_and_its_checkpoints_hold_only_that_and_name_the_base(lora_run, base):
    run_dir, console = lora_run
    run = Run.open(run_dir)
    model, checkpoint = run.load_model()
    trained, frozen = lora.parameter_counts(model)
    assert f"{trained + frozen:,} parameters, {trained:,} trained and {frozen:,} frozen" in console
    # query + value adapters in 2 blocks, and the embedding's: rank 4 each.
    hidden, vocabulary = 16, run.tokenizer.vocabulary_size
    assert trained == 2 * 2 * (hidden * 4 + 4 * hidden) + (vocabulary * 4 + 4 * hidden)
    stored = [name for name, _ in tf.train.list_variables(checkpoint) if name.startswith("model/")]
    assert len(stored) == len(lora.adapter_weights(model)) == 10
    assert read_base(checkpoint) == base_record(base, Run.open(base).checkpoints.preferred())


def test_only_the_adapters_moved_and_the_frozen_weights_are_the_bases(lora_run, base):
    model, _ = Run.open(lora_run[0]).load_model()
    base_model, _ = Run.open(base).load_model()
    frozen = [w for w in model.weights if not w.trainable]
    assert [w.numpy().tolist() for w in frozen] == [w.numpy().tolist() for w in base_model.weights]
    assert max(np.abs(w.numpy()).max() for w in lora.adapter_weights(model) if w.name.endswith("_b")) > 1e-3


def test_the_merged_export_computes_the_unmerged_models_logits(lora_run, base, float_export):
    run = Run.open(lora_run[0])
    unmerged, _ = run.load_model()
    merged, _ = run.load_servable_model()
    assert not lora.has_adapters(merged) and len(merged.weights) == len(Run.open(base).load_model()[0].weights)
    want = logits(unmerged, TEXTS, run.tokenizer)
    np.testing.assert_allclose(logits(merged, TEXTS, run.tokenizer), want, atol=1e-5)
    base_logits = logits(Run.open(base).load_model()[0], TEXTS, run.tokenizer)
    assert np.abs(want - base_logits).max() > 1e-3  # the adapters changed the model

    exported = tf.saved_model.load(float_export)
    in_process = GenerationModule(unmerged, run.tokenizer, max_length=run.config.max_seq_len, jit_compile=False)
    np.testing.assert_allclose(exported.signatures["score"](texts=tf.constant(TEXTS))["log_probability"].numpy(),
                               in_process.score(tf.constant(TEXTS))["log_probability"].numpy(), rtol=1e-5)


def test_an_int8_export_is_smaller_and_scores_close_to_float(lora_run, float_export, tmp_path):
    out = str(tmp_path / "int8")
    assert cli.main(["export", "--run-dir", lora_run[0], "--out", out, "--quantize", "int8"]) == 0
    sizes, scores = {}, {}
    for quantize, export in (("none", float_export), ("int8", os.path.join(out, "1"))):
        variables = os.path.join(export, "variables")
        sizes[quantize] = sum(os.path.getsize(os.path.join(variables, n)) for n in os.listdir(variables))
        scores[quantize] = tf.saved_model.load(export).signatures["score"](
            texts=tf.constant(TEXTS))["perplexity"].numpy()
    # The tiny model's int8 tensors hold a quarter of float32's bytes, beside its float norms and scales.
    assert sizes["int8"] < 0.6 * sizes["none"], sizes
    np.testing.assert_allclose(scores["int8"], scores["none"], rtol=0.02)


def test_adapters_only_writes_what_trains_and_it_loads_back_over_the_base(lora_run, base, tmp_path):
    out = str(tmp_path / "adapters")
    assert cli.main(["export", "--run-dir", lora_run[0], "--out", out, "--adapters-only"]) == 0
    assert sorted(os.listdir(out)) == [lora.ADAPTERS_INFO, lora.ADAPTERS_FILE, "manifest.json"]
    run = Run.open(lora_run[0])
    want = logits(run.load_model()[0], TEXTS, run.tokenizer)
    model = run.build_model()
    load_pretrained(model.backbone, Run.open(base))
    lora.adapt_as_configured(model.backbone, run.config.train)
    np.testing.assert_allclose(logits(lora.load_adapters(model, out), TEXTS, run.tokenizer), want, atol=1e-6)


def test_adapters_only_of_a_run_without_adapters_is_one_line_and_exit_code_2(base, tmp_path, capsys):
    assert cli.main(["export", "--run-dir", base, "--out", str(tmp_path / "a"), "--adapters-only"]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "train.lora_rank=0" in message
    assert not os.path.exists(tmp_path / "a")


def rewrite_with_other_weights(checkpoint):
    """Write other weights under the path of the base run's `checkpoint`, as if it were retrained."""
    run = Run.open(os.path.dirname(os.path.dirname(os.path.dirname(checkpoint))))
    model, _ = run.load_model(checkpoint=checkpoint)
    model.weights[0].assign(model.weights[0] + 1.0)
    tf.train.Checkpoint(model=variables_in_order(model.weights)).write(checkpoint)


def files_of(directory):
    """{relative path: (size, modification time)} of every file under `directory`."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
    return found


def test_a_base_that_changed_or_went_is_refused_in_one_line(base, tmp_path, capsys):
    changed = str(tmp_path / "base")
    shutil.copytree(base, changed)
    run_dir = str(tmp_path / "run")
    train(["--config", SFT_CONFIG, "--run-dir", run_dir, f"train.init_from={changed}", *SHORT[1:], "train.steps=2",
           *LORA])
    recorded = read_base(Run.open(run_dir).checkpoints.latest)["checkpoint"]
    rewrite_with_other_weights(recorded)
    before = files_of(run_dir)
    capsys.readouterr()
    for args in (["generate", "--run-dir", run_dir, "--prompt", "a"],
                 ["train", "--config", SFT_CONFIG, "--run-dir", run_dir, f"train.init_from={changed}", *SHORT, *LORA]):
        assert cli.main(args) == 2
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1 and re.search(r"which changed since \(fingerprint", message), message
    assert files_of(run_dir) == before  # the refused commands left the run as it was
    for name in os.listdir(os.path.dirname(recorded)):
        os.remove(os.path.join(os.path.dirname(recorded), name))
    assert cli.main(["generate", "--run-dir", run_dir, "--prompt", "a"]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "which no longer exists" in message


def test_classify_trains_adapters_and_its_new_head_and_seq2seq_its_adapters(base, seq2seq_run, tmp_path):
    seq2seq_config = tmp_path / "seq2seq.yaml"
    seq2seq_config.write_text("model:\n  task: seq2seq\n")
    cases = {
        "classify": (os.path.join(REPO, "configs", "classify-tiny.yaml"), [f"train.init_from={base}"],
                     lambda model: model.output_dense.weights),
        "seq2seq": (str(seq2seq_config), [f"train.init_from={seq2seq_run}",
                                          f"data.path={os.path.join(os.path.dirname(seq2seq_run), 'train.jsonl')}"],
                    lambda model: []),
    }
    for task, (config, overrides, head) in cases.items():
        run_dir = str(tmp_path / task)
        train(["--config", config, "--run-dir", run_dir, *overrides, *SHORT[1:], "train.steps=2", *LORA])
        model, checkpoint = Run.open(run_dir).load_model()
        assert read_base(checkpoint) is not None
        trained = {id(w) for w in model.trainable_weights}
        assert trained == {id(w) for w in lora.adapter_weights(model) + head(model)}, task
        assert len(lora.adapter_weights(model)) > 0

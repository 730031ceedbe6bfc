"""The trainer scaled out: mirrored replicas with accumulation, two worker processes, MFU, bad input.

Every run trains a tiny model on a generated corpus of a few hundred short documents.
"""

import contextlib
import io
import os
import random
import re
import signal
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tfllm import cli, distribute
from tfllm import config as config_lib
from tfllm.callbacks.checkpointer import restore_weights
from tfllm.data.pipeline import lm_dataset
from tfllm.flops import training_flops_per_token
from tfllm.data.corpus_stats import CorpusStats
from tfllm.run import Checkpoints, Run
from tfllm.tokenizers import load_tokenizer
from tests.trainers.run_testing import (  # noqa: F401  (corpus: a fixture)
    PEAK_FLOPS, assert_runs_end_alike, corpus, read_metrics, tiny, wait_for_step)
from tests.trainers.worker_testing import WorkerJob
from tfllm.tasks import TASKS
from tfllm.trainers.fit import compile_model
from tfllm.trainers.session import jit_compile


# One layer: tracing, most of a run's time, grows with the layers, and one holds every kind of
# weight whose training the tests below compare.
ONE_LAYER = dict(model__num_layers=1)


def train_in_process(corpus, strategy, run_dir, **changes):
    """`tfllm train` on `strategy` (20 steps, one layer); returns its console output."""
    patch = pytest.MonkeyPatch()
    patch.setattr(distribute, "make_strategy", lambda *args: strategy)
    console = io.StringIO()
    try:
        with contextlib.redirect_stdout(console):
            code = cli.main(["train", "--run-dir", run_dir, *tiny(
                corpus, **{**ONE_LAYER, "train__steps": 20, "train__eval_every": 10, **changes}
            )])
    finally:
        patch.undo()
    assert code == 0
    return console.getvalue()


@pytest.fixture(scope="module")
def mirrored_run(corpus, mirrored_strategy, tmp_path_factory):
    """2 CPU replicas x 2 micro-batches of 2; returns (run dir, console output)."""
    run_dir = str(tmp_path_factory.mktemp("mirrored") / "run")
    return run_dir, train_in_process(corpus, mirrored_strategy, run_dir, train__grad_accum_steps=2)


def final_weights_and_losses(run_dir):
    run = Run.open(run_dir)
    model, _ = run.load_model(prefer_best=False)
    losses = [r["loss"] for r in read_metrics(run_dir) if "loss" in r]
    return [w.numpy() for w in model.weights], losses


def test_two_replicas_with_accumulation_train_like_one_device(mirrored_run, corpus, one_device_strategy, tmp_path):
    run_dir, console = mirrored_run
    assert "Batch: global 8 = 2 replica(s) x 2 micro-batch(es) of 2;" in console
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest")).endswith("ckpt-20")
    # One input pipeline feeds both replicas consecutive per-replica batches: the same blocks,
    # in the same order, as the one-device pipeline's global batches.
    console = train_in_process(corpus, one_device_strategy, str(tmp_path / "one"))
    assert "Batch: global 8 = 1 replica(s) x 1 micro-batch(es) of 8;" in console
    mirrored, one_device = final_weights_and_losses(run_dir), final_weights_and_losses(str(tmp_path / "one"))
    for a, b in zip(mirrored[0], one_device[0]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    np.testing.assert_allclose(mirrored[1], one_device[1], rtol=1e-5)


def test_mfu_and_tokens_per_sec_land_in_metrics_jsonl_and_tensorboard(mirrored_run):
    run_dir, _ = mirrored_run
    config = config_lib.load_config(os.path.join(run_dir, "config.yaml"))
    vocab = load_tokenizer(os.path.join(run_dir, "tokenizer")).vocabulary_size
    per_token = training_flops_per_token(1, 16, 32, vocab, 16)
    records = [r for r in read_metrics(run_dir) if "loss" in r]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    for r in records:
        assert r["tokens_per_sec"] > 0
        assert r["mfu"] == pytest.approx(r["tokens_per_sec"] * per_token / config.train.peak_flops, rel=1e-9)
    acc = event_accumulator.EventAccumulator(
        os.path.join(run_dir, "logs"), size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    mfu = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("train/mfu")}
    assert sorted(mfu) == [5, 10, 15, 20]
    for r in records:
        assert mfu[r["step"]] == pytest.approx(r["mfu"], rel=1e-6)


@pytest.mark.parametrize("strategy_fixture, replicas", [("one_device_strategy", 1), ("mirrored_strategy", 2)])
def test_training_and_validation_batches_have_static_shapes(mirrored_run, request, strategy_fixture, replicas):
    run_dir, _ = mirrored_run
    strategy = request.getfixturevalue(strategy_fixture)
    config = config_lib.load_config(os.path.join(run_dir, "config.yaml"))
    run = Run(run_dir)
    data = TASKS["causal_lm"].datasets(config, CorpusStats.load(run.corpus_dir), run.tokenizer, strategy, True)
    for dataset in (data.train_at(0), data.val_ds):
        specs = tf.nest.flatten(dataset.element_spec, expand_composites=True)
        assert len(specs) == 2 * replicas  # (x, y) per replica
        assert all(spec.shape.is_fully_defined() for spec in specs)
        assert {tuple(spec.shape) for spec in specs} == {(8 // replicas, 16)}


def single_process_reference(run_dir):
    """One process, same seed and optimizer, each global batch = worker 0's half + worker 1's half.

    The model is built outside any strategy: under an explicit strategy Keras's `fit` reads one
    batch from a first iterator to build the model symbolically and then trains from a second
    one, which a seeded shuffle orders differently; multi-worker fit skips that build
    (tfllm/compat.py, workaround 4) and trains from the first, as fit does without a strategy.
    """
    config = config_lib.load_config(os.path.join(run_dir, "config.yaml"))
    t, m = config.train, config.model
    # The trainer's order: the seed fixes the shuffles (global seed + op seed) and the init.
    keras.utils.set_random_seed(t.seed)
    run = Run(run_dir)
    stats, tokenizer = CorpusStats.load(run.corpus_dir), run.tokenizer
    halves = [
        lm_dataset(stats.train_files, tokenizer, seq_len=m.seq_len, batch_size=t.batch_size // 2, shuffle=True,
                   seed=t.seed, repeat=True, shuffle_buffer=config.data.shuffle_buffer, num_shards=2,
                   shard_index=index)
        for index in range(2)
    ]
    both = tf.data.Dataset.zip(tuple(halves)).map(
        lambda a, b: (tf.concat([a[0], b[0]], 0), tf.concat([a[1], b[1]], 0))
    )
    model = run.build_model()
    xla = jit_compile(t.jit_compile, tf.distribute.get_strategy())
    compile_model(types.SimpleNamespace(config=config, jit_compile=xla), model)
    initial = [w.numpy() for w in model.weights]
    model.fit(both, epochs=1, steps_per_epoch=t.steps, verbose=0, shuffle=False)
    return model, initial, [w.numpy() for w in model.weights]


# The two-worker job of the tests below: long enough to be stopped in the middle of its one
# epoch and resumed there.
TWO_WORKERS = dict(ONE_LAYER, distribute__strategy="multi_worker", train__steps=20, train__eval_every=20,
                   train__log_every=5, train__checkpoint_every=5, train__keep_checkpoints=10)


@pytest.fixture(scope="module")
def two_worker_run(corpus, tmp_path_factory):
    """An uninterrupted two-worker job with a --run-dir each: (chief's run dir, other's, each worker's weights)."""
    tmp_path = tmp_path_factory.mktemp("two_workers")
    chief, worker = tmp_path / "worker0", tmp_path / "worker1"
    _, weights = WorkerJob(tmp_path, [chief, worker], tiny(corpus, **TWO_WORKERS)).finish()
    return chief, worker, weights


@pytest.mark.slow
def test_two_worker_processes_train_like_one_process_and_only_the_chief_writes(two_worker_run):
    chief, worker, weights = two_worker_run
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    model, initial, reference = single_process_reference(str(chief))
    assert max(np.abs(a - b).max() for a, b in zip(initial, reference)) > 1e-3  # training moved them
    for a, b in zip(weights[0], reference):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

    restore_weights(model, Checkpoints(str(chief / "checkpoints")).latest)
    for a, w in zip(weights[0], model.weights):
        np.testing.assert_array_equal(a, w.numpy())
    assert {"config.yaml", "checkpoints", "logs", "metrics.jsonl"} <= set(os.listdir(chief))
    assert not worker.exists()  # the other worker prepares its data in a private temporary directory
    # Two CPU workers: the global throughput is measured against two hosts' peaks.
    per_token = training_flops_per_token(1, 16, 32, model.backbone.vocabulary_size, 16)
    records = [r for r in read_metrics(str(chief)) if "loss" in r]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    for r in records:
        assert r["mfu"] == pytest.approx(r["tokens_per_sec"] * per_token / (2 * PEAK_FLOPS), rel=1e-9)


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_every_worker_after_the_same_saved_step_and_the_restarted_job_ends_alike(
        two_worker_run, corpus, tmp_path):
    # Both workers get the same --run-dir, as on a shared file system: only the chief writes it,
    # and the other worker reads the chief's checkpoints to resume.
    run_dir = tmp_path / "run"
    latest = os.path.join(run_dir, "checkpoints", "latest")
    overrides = tiny(corpus, **TWO_WORKERS)
    stop_after = random.Random("two workers").randrange(7, 14)  # seeded: a failure can be replayed
    # Paused steps: the job is still running when the stop point is seen.
    job = WorkerJob(tmp_path, [run_dir] * 2, overrides, name="preempted", step_pause=0.3)
    try:
        reached = wait_for_step(str(run_dir), stop_after, job.processes)
        job.processes[1].send_signal(signal.SIGTERM)  # a preemption notice to worker 1 only
        for process in job.processes:
            process.wait(timeout=120)
    finally:
        job.kill()
    chief_output, worker_output = outputs = job.outputs()
    assert reached and [p.returncode for p in job.processes] == [130, 130], "\n".join(outputs)
    match = re.search(r"tfllm train: stopped by SIGTERM at step (\d+); the newest checkpoint is (\S+);", chief_output)
    assert match, chief_output
    step, saved = int(match[1]), match[2]
    assert saved == tf.train.latest_checkpoint(latest) and saved.endswith(f"ckpt-{step}")
    assert 0 < step < TWO_WORKERS["train__steps"], saved
    assert f"tfllm train: stopped by SIGTERM at step {step}; the chief saved this step" in worker_output, worker_output

    # A worker that cannot see the chief's checkpoints would start over while the chief resumes:
    # every worker refuses instead of training different steps, and the run stays as it was.
    job = WorkerJob(tmp_path, [run_dir, tmp_path / "elsewhere"], overrides, name="unshared")
    try:
        for process in job.processes:
            process.wait(timeout=120)
    finally:
        job.kill()
    outputs = job.outputs()
    assert [p.returncode for p in job.processes] == [2, 2], "\n".join(outputs)
    for output in outputs:
        assert "tfllm train: error: the workers found different checkpoints to resume" in output, output
    assert tf.train.latest_checkpoint(latest) == saved

    # The restarted job continues from the saved step on both workers and ends where the
    # uninterrupted job ended: weights, optimizer state and logged losses.
    outputs, weights = WorkerJob(tmp_path, [run_dir] * 2, overrides, name="restarted").finish()
    for output in outputs:
        assert f"Resuming from {saved} (step {step})" in output, output
    chief, _, uninterrupted = two_worker_run
    for a, b, c in zip(weights[0], weights[1], uninterrupted[0]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-6, rtol=0)
    assert_runs_end_alike(str(run_dir), str(chief), TWO_WORKERS["train__steps"], 5,
                          f"stopped after step {stop_after}, resumed at {step}")


@pytest.mark.parametrize(
    "overrides, env, message",
    [
        ({"distribute__strategy": "horovod"}, {}, "distribute.strategy='horovod' is invalid: use one of auto"),
        ({"distribute__cpu_replicas": 0}, {}, "distribute.cpu_replicas=0 is invalid: use 1 or more"),
        ({"distribute__cpu_replicas": 3}, {}, "distribute.cpu_replicas=3 cannot be applied"),
        ({"distribute__strategy": "multi_worker"}, {"TF_CONFIG": "{not json"}, "TF_CONFIG is not valid JSON"),
        ({"distribute__strategy": "multi_worker"}, {"TF_CONFIG": '{"task": {"type": "worker", "index": 0}}'},
         'TF_CONFIG has no "cluster"'),
        ({"distribute__strategy": "multi_worker", "distribute__cpu_replicas": 2},
         {"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}'},
         "distribute.cpu_replicas > 1 is only for mirrored training on one machine"),
        ({"train__precision": "mixed_float16"}, {}, "train.precision=mixed_float16 needs a GPU"),
    ],
)
def test_bad_scaling_settings_are_one_line_and_exit_code_2(corpus, tmp_path, monkeypatch, capsys,
                                                           overrides, env, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run_dir), *tiny(corpus, **overrides)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfllm train: error: ") and "\n" not in err and message in err, err
    assert not run_dir.exists() or os.listdir(run_dir) == []


def test_a_global_batch_that_does_not_split_is_exit_code_2(corpus, tmp_path, monkeypatch, capsys,
                                                           mirrored_strategy):
    monkeypatch.setattr(distribute, "make_strategy", lambda *args: mirrored_strategy)
    overrides = tiny(corpus, train__batch_size=6, train__grad_accum_steps=2)
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("tfllm train: error: train.batch_size=6 does not divide into 2 replica(s) x 2 "
                   "accumulation step(s) = 4; use a multiple of 4")


def test_several_steps_per_execution_across_replicas_is_exit_code_2(corpus, tmp_path, monkeypatch, capsys,
                                                                   mirrored_strategy):
    monkeypatch.setattr(distribute, "make_strategy", lambda *args: mirrored_strategy)
    overrides = tiny(corpus, train__steps_per_execution=4)
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfllm train: error: train.steps_per_execution=4 fails with 2 replicas")


def test_keras_fails_on_several_steps_per_execution_across_replicas(mirrored_strategy):
    """The upstream bug behind the refusal above: when this fails, Keras is fixed; drop the refusal."""
    with mirrored_strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss="mse", steps_per_execution=2, jit_compile=False)
    x = np.ones((32, 4), "float32")
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :3])).batch(8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="You must feed a value for placeholder tensor"):
        model.fit(data, epochs=1, verbose=0, shuffle=False)


def test_xla_across_replicas_is_exit_code_2(corpus, tmp_path, monkeypatch, capsys, mirrored_strategy):
    monkeypatch.setattr(distribute, "make_strategy", lambda *args: mirrored_strategy)
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *tiny(corpus, train__jit_compile="true")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfllm train: error: train.jit_compile=true fails with 2 replicas")


def test_keras_cannot_compile_one_step_across_replicas_with_xla(mirrored_strategy):
    """The upstream bug behind the refusal above: when this fails, Keras is fixed; drop the refusal."""
    with mirrored_strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    x = np.ones((16, 4), "float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="Trying to access resource .* located in device"):
        model.fit(x, x[:, :3], batch_size=8, epochs=1, verbose=0)


def test_the_gpt2_124m_config_loads_with_gpt2_sizes():
    config = config_lib.load_config(cli.resolve_config_path("gpt2-124m"))
    m = config.model
    assert (m.num_layers, m.num_heads, m.hidden_dim, m.intermediate_dim, m.seq_len) == (12, 12, 768, 3072, 1024)
    assert (config.data.tokenizer, config.data.vocab_size) == ("bpe", 50257)
    assert (config.train.precision, config.train.jit_compile) == ("mixed_bfloat16", True)
    # 6 x 123.5M matmul weights + 6 x 2 x 12 x 768 x 1024 for attention: ~0.85 GFLOPs per token.
    per_token = training_flops_per_token(12, 768, 3072, 50257, 1024)
    assert per_token == 6 * (12 * (4 * 768**2 + 2 * 768 * 3072) + 50257 * 768) + 12 * 12 * 768 * 1024
    assert per_token == 854_438_400


# A masked LM weighs a different number of masked tokens in every row: the runs below agree only
# if every step's loss is the mean over the global batch's masked tokens. AdamW without clipping
# or weight decay, 3 steps.
MASKED_LM = dict(model__task="masked_lm", train__clip_norm=0, train__weight_decay=0, train__steps=3,
                 train__eval_every=3, train__log_every=1, train__warmup_steps=1)


def masked_lm_weights(corpus, strategy, run_dir, **changes):
    train_in_process(corpus, strategy, run_dir, **MASKED_LM, **changes)
    return final_weights_and_losses(run_dir)


def test_a_masked_lm_trains_alike_with_accumulation_across_replicas_and_on_one_device(
        corpus, one_device_strategy, mirrored_strategy, tmp_path):
    """Each micro-batch of each replica holds its own number of masked tokens. Accumulation alone
    and replicas alone, model by model, are in tests/test_train_step_weighting.py (masked_lm
    under each of tests/distributed_testing.py's SETUPS); here the trainer's pipeline and
    compile settings, both at once (a wrong weighting in either breaks the match)."""
    reference = masked_lm_weights(corpus, one_device_strategy, str(tmp_path / "one"))
    weights, losses = masked_lm_weights(corpus, mirrored_strategy, str(tmp_path / "mirrored"),
                                        distribute__strategy="mirrored", distribute__cpu_replicas=2,
                                        train__grad_accum_steps=2)
    assert len(weights) == len(reference[0]) and len(losses) == 3
    for a, b in zip(weights, reference[0]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    np.testing.assert_allclose(losses, reference[1], rtol=1e-5)

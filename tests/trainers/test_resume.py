"""Exact resume: a run killed at a random step and started again ends where an uninterrupted run ends.

One run is killed for real: it trains in a subprocess (SIGKILL leaves no chance to clean up).
Every other task and strategy resumes from a copy of the uninterrupted run cut back to one of
its checkpoints, the state a kill after that checkpoint leaves. The uninterrupted reference and
the resumed runs train in this process, on the session's strategies. Each run costs seconds of
tracing whatever its length, so a scenario combines settings that resume independently of each
other (a task, a strategy, a data option) rather than train a run for each. A signal to one
worker of a multi-worker job, and the restart of that job, are in
tests/trainers/test_distributed_training.py.
"""

import contextlib
import glob
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2
# TensorFlow exports a setter of op determinism but no getter; the getter lives beside it.
from tensorflow.python.framework.config import (
    disable_op_determinism, enable_op_determinism, is_op_determinism_enabled)

from tests.trainers.run_testing import (  # noqa: F401  (corpus: a fixture)
    REPO, assert_runs_end_alike, corpus, logged_steps, read_metrics, tiny, wait_for_step)
from tfllm import cli, distribute
from tfllm import config as config_lib
from tfllm.run import Run
from tfllm.trainers.resume import KEYS_ADDED_LATER, run_fingerprint
from tfllm.trainers.session import Session

STEPS = 30
# One layer: tracing, most of a run's time, grows with the layers, and one holds every kind of
# weight a resume restores.
ONE_LAYER = dict(model__num_layers=1)
RESUME = dict(ONE_LAYER, train__steps=STEPS, train__eval_every=10, train__log_every=5, train__checkpoint_every=5,
              train__keep_checkpoints=10)
# (strategy fixture, config changes): every task, and each strategy and option that changes what
# a resume restores or skips: a causal LM with adapters and gradient accumulation on one device; a
# masked LM (its masks) on packed rows (segment ids) on 2 mirrored CPU replicas (a pipeline per
# step skips a batch per replica); a classifier with balanced class weights, a prompt ->
# completion model and an encoder-decoder ({examples} is their data file).
SCENARIOS = {
    # Adapters (with dropout: its random state resumes too) on a frozen run of the same shape,
    # 2 micro-batches a step (dropout draws twice a step).
    "lora_with_accumulation": ("one_device_strategy", dict(
        train__init_from="{lora_base}", train__lora_rank=4, train__lora_dropout=0.1,
        train__lora_targets="query,value,mlp,embedding", train__grad_accum_steps=2)),
    "masked_lm_packed_on_two_replicas": ("mirrored_strategy", dict(
        model__task="masked_lm", data__pack="true", distribute__strategy="mirrored", distribute__cpu_replicas=2)),
    "classify": ("one_device_strategy", dict(model__task="classify", train__class_weights="balanced",
                                            data__path="{examples}/classify.jsonl")),
    "sft": ("one_device_strategy", dict(model__task="sft", data__path="{examples}/sft.jsonl")),
    "seq2seq": ("one_device_strategy", dict(model__task="seq2seq", data__path="{examples}/seq2seq.jsonl")),
}
# Resumed after a SIGKILL (a subprocess); the others from a copy of the finished run's checkpoint.
KILLED = ("lora_with_accumulation",)


@pytest.fixture(scope="module")
def lora_base(corpus, one_device_strategy, tmp_path_factory):  # noqa: F811
    """A tiny run (5 steps, `tiny`'s settings, one layer) for the LoRA scenario to adapt, and for the tests of
    what a resume refuses to copy and start again. Tests must not write into it: copy it first."""
    run_dir = str(tmp_path_factory.mktemp("lora_base") / "run")
    train_in_process(one_device_strategy, run_dir, tiny(corpus, train__steps=5, **ONE_LAYER))
    return run_dir


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """classify.jsonl (3 classes, 6:3:1), sft.jsonl and seq2seq.jsonl, 200 lines each, in one directory."""
    rng = random.Random(0)
    directory = tmp_path_factory.mktemp("examples")
    words = "model token step weight batch replica worker chief shard gradient".split()
    lines = {"classify": [], "sft": [], "seq2seq": []}
    for i in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(3, 9)))
        lines["classify"].append({"text": f"{i} {text}", "label": "abc"[min(2, i % 10 // 3)]})
        lines["sft"].append({"prompt": f"{i} {text}:", "completion": " " + text[::-1]})
        lines["seq2seq"].append({"source": f"{i} {text}", "target": text[::-1]})
    for name, records in lines.items():
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(directory)


def train_in_process(strategy, run_dir, overrides):
    patch = pytest.MonkeyPatch()
    patch.setattr(distribute, "make_strategy", lambda *args: strategy)
    console = io.StringIO()
    try:
        with contextlib.redirect_stdout(console):
            code = cli.main(["train", "--run-dir", run_dir, *overrides])
    finally:
        patch.undo()
    assert code == 0, console.getvalue()[-2000:]
    return console.getvalue()


def kill_at_a_random_step(run_dir, overrides, rng):
    """Start `tfllm train` in a subprocess and SIGKILL it once it has logged step >= a random step
    and written a checkpoint."""
    kill_after = rng.randrange(7, STEPS - 7)
    command = [sys.executable, "-m", "tfllm.cli", "train", "--run-dir", run_dir, *overrides]
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    log = open(os.path.join(os.path.dirname(run_dir), "killed.log"), "w+")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        if wait_for_step(run_dir, kill_after, [process]):
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        log.seek(0)
        output = log.read()
        log.close()
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{output[-3000:]}"
    return kill_after


def scenario_overrides(scenario, corpus, examples, request):
    """(strategy, overrides) of `scenario`."""
    fixture, changes = SCENARIOS[scenario]
    changes = {key: value.format(examples=examples, lora_base=request.getfixturevalue("lora_base")
                                 if "{lora_base}" in value else "") if isinstance(value, str) else value
               for key, value in changes.items()}
    return request.getfixturevalue(fixture), tiny(corpus, **{**RESUME, **changes})


@pytest.mark.slow
@pytest.mark.parametrize("scenario", KILLED)
def test_a_run_killed_at_a_random_step_resumes_and_ends_like_an_uninterrupted_one(scenario, corpus,  # noqa: F811
                                                                                  examples, request, tmp_path):
    strategy, overrides = scenario_overrides(scenario, corpus, examples, request)
    reference, resumed = str(tmp_path / "reference" / "run"), str(tmp_path / "resumed" / "run")
    train_in_process(strategy, reference, overrides)

    # Seeded: a failure names a kill point that can be replayed.
    kill_after = kill_at_a_random_step(resumed, overrides, random.Random(scenario))
    saved = tf.train.latest_checkpoint(os.path.join(resumed, "checkpoints", "latest"))
    assert saved, "the run was killed before its first checkpoint: nothing was resumed"
    resume_step = int(saved.rsplit("-", 1)[1])
    assert 0 < resume_step < STEPS
    console = train_in_process(strategy, resumed, overrides)
    assert f"Resuming from {saved} (step {resume_step})" in console

    assert_runs_end_alike(resumed, reference, STEPS, 5, f"killed after step {kill_after}, resumed at {resume_step}")


def stopped_after_checkpoint(reference, run_dir, step):
    """Copy the finished run `reference` to `run_dir` as a run stopped right after saving its
    checkpoint `step` would be: the later checkpoints and the best one gone, what it logged
    after that step still there (a killed run leaves what it logged after its last checkpoint,
    which resuming drops). The runs are deterministic, so the files up to `step` are the
    stopped run's own."""
    shutil.copytree(reference, run_dir)
    shutil.rmtree(os.path.join(run_dir, "checkpoints", "best"), ignore_errors=True)
    latest = os.path.join(run_dir, "checkpoints", "latest")
    kept = [f"ckpt-{saved}" for saved in range(5, step + 1, 5)]
    for path in glob.glob(os.path.join(latest, "ckpt-*")):
        if os.path.basename(path).split(".")[0] not in kept:
            os.remove(path)
    tf.compat.v1.train.update_checkpoint_state(latest, kept[-1], all_model_checkpoint_paths=kept)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", [name for name in SCENARIOS if name not in KILLED])
def test_every_task_and_strategy_resumed_from_a_checkpoint_ends_like_an_uninterrupted_run(  # noqa: F811
        scenario, corpus, examples, request, tmp_path):
    strategy, overrides = scenario_overrides(scenario, corpus, examples, request)
    reference, resumed = str(tmp_path / "reference"), str(tmp_path / "resumed")
    train_in_process(strategy, reference, overrides)
    # Seeded per scenario: a failure names a resume point that can be replayed.
    step = random.Random(scenario).randrange(5, STEPS, 5)
    stopped_after_checkpoint(reference, resumed, step)
    console = train_in_process(strategy, resumed, overrides)
    assert f"(step {step})" in console, console[-2000:]
    assert_runs_end_alike(resumed, reference, STEPS, 5, f"resumed at {step}")


def test_resume_refuses_a_changed_config_naming_the_keys(corpus, lora_base, one_device_strategy, tmp_path,  # noqa: F811
                                                         capsys):
    # A copy of a finished 5-step run (checkpoint and metrics at step 5).
    run_dir = str(tmp_path / "run")
    shutil.copytree(lora_base, run_dir)
    changed = tiny(corpus, train__steps=5, model__hidden_dim=32, train__seed=3, **ONE_LAYER)
    assert cli.main(["train", "--run-dir", run_dir, *changed]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert "model.hidden_dim=16 -> 32" in message and "train.seed=0 -> 3" in message
    # Keys that may change on resume: more steps continue the same run from step 5.
    longer = tiny(corpus, train__steps=10, train__learning_rate=1e-3, **ONE_LAYER)
    console = train_in_process(one_device_strategy, run_dir, longer)
    assert "(step 5)" in console
    assert [r["step"] for r in read_metrics(run_dir)] == [5, 10]
    # A finished run started again has nothing left to do.
    console = train_in_process(one_device_strategy, run_dir, longer)
    assert "already at step 10" in console


def test_deterministic_turns_on_op_determinism(one_device_strategy, tmp_path, monkeypatch):
    # The switch is global to the process: off to start with, as in a new process, and put back
    # as it was for the tests that follow.
    was_enabled = is_op_determinism_enabled()
    monkeypatch.setattr(distribute, "make_strategy", lambda *args: one_device_strategy)
    seen = []
    try:
        disable_op_determinism()
        for value in ("false", "true"):
            # A set peak: nothing measured.
            config = config_lib.load_config(None, [f"train.deterministic={value}", "train.peak_flops=1e9"])
            Session.start(config, str(tmp_path / f"run-{value}"))
            seen.append(is_op_determinism_enabled())
    finally:
        (enable_op_determinism if was_enabled else disable_op_determinism)()
    assert seen == [False, True]


def test_resuming_drops_the_orphaned_metrics_and_tensorboard_events(tmp_path):
    """What the killed run logged after its last checkpoint goes; a record cut by the kill too."""
    logs = tmp_path / "logs"
    writer = tf.summary.create_file_writer(str(logs))
    with writer.as_default():
        for step in range(1, 11):
            tf.summary.scalar("train/loss", 10.0 - step, step=step)
    writer.close()
    (path,) = glob.glob(str(logs / "*.tfevents.*"))
    with open(path, "ab") as f:
        f.write(b"\x20\x00\x00\x00\x00\x00\x00\x00\x01\x02")  # a record cut short by SIGKILL
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": step, "loss": 1.0}) + "\n" for step in range(2, 11, 2)))

    Run(str(tmp_path)).drop_logs_after(6)
    assert logged_steps(str(tmp_path)) == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [2, 4, 6]
    values = [float(tf.make_ndarray(v.tensor)) for r in tf.data.TFRecordDataset(path)
              for v in event_pb2.Event.FromString(r.numpy()).summary.value]
    assert values == [9.0, 8.0, 7.0, 6.0, 5.0, 4.0]


def test_a_key_the_command_does_not_write_follows_the_run_being_resumed(tmp_path):
    from tfllm.config import load_config, written_keys
    from tfllm.trainers.resume import Resume

    run = Run(str(tmp_path / "run")).create()
    # A run started when train.precision defaulted to float32, resumed now that it is auto.
    run.save_config(load_config(None, ["train.precision=float32", "train.steps=5"]))
    overrides = ["train.steps=9"]
    followed = Resume.follow_saved(load_config(None, overrides), run, written_keys(None, overrides))
    assert followed.train.precision == "float32" and followed.train.steps == 9
    assert Resume.find(followed, run).checkpoint is None
    # A key the command writes stays as written (a resume then refuses it once a checkpoint exists).
    overrides = ["train.precision=mixed_bfloat16"]
    written = Resume.follow_saved(load_config(None, overrides), run, written_keys(None, overrides))
    assert written.train.precision == "mixed_bfloat16"
    # Without the command's written keys (the Python API), every key is taken as given.
    assert Resume.follow_saved(load_config(None, []), run).train.precision == "auto"


class WithoutKeys:
    """A config as a run saved before `keys` existed saw it."""

    def __init__(self, config, keys):
        self.config, self.keys = config, keys

    def flat(self):
        return {key: value for key, value in self.config.flat().items() if key not in self.keys}


def test_keys_added_later_leave_an_older_runs_fingerprint_unchanged_while_at_their_defaults(tmp_path):
    run = Run(str(tmp_path / "run")).create()
    os.makedirs(run.tokenizer_dir)
    with open(os.path.join(run.tokenizer_dir, "vocab.txt"), "w") as f:
        f.write("a\n")
    config = config_lib.load_config(None, ["model.position=rope", "model.use_bias=false"])
    older = WithoutKeys(config, set(KEYS_ADDED_LATER))
    assert run_fingerprint(config, run) == run_fingerprint(older, run)
    changed = config_lib.load_config(None, ["model.position=rope", "model.use_bias=false", "model.qkv_bias=true"])
    assert run_fingerprint(changed, run) != run_fingerprint(config, run)

"""Exact resume: a run killed at a random step and started again ends where an uninterrupted run ends.

The run to kill trains in a subprocess (SIGKILL leaves no chance to clean up); the uninterrupted
reference and the resumed run train in this process, on the session's strategies.
"""

import contextlib
import glob
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from tests.trainers.run_testing import REPO, corpus, tiny  # noqa: F401  (corpus: a fixture)
from tests.trainers.worker_testing import WorkerJob
from tfllm import cli, distribute
from tfllm.run import Run

STEPS = 30
RESUME = dict(train__steps=STEPS, train__eval_every=10, train__log_every=5, train__checkpoint_every=5,
              train__keep_checkpoints=10)
# (strategy fixture, config changes): one device, 2 mirrored CPU replicas, gradient accumulation,
# and every task: a masked LM (its masks), a packed causal LM, a classifier with balanced class
# weights and a prompt -> completion model ({examples} is their data file).
SCENARIOS = {
    "one_device": ("one_device_strategy", {}),
    "mirrored": ("mirrored_strategy", dict(distribute__strategy="mirrored", distribute__cpu_replicas=2)),
    "accumulation": ("one_device_strategy", dict(train__grad_accum_steps=2)),
    "masked_lm": ("one_device_strategy", dict(model__task="masked_lm")),
    "causal_lm_packed": ("one_device_strategy", dict(data__pack="true")),
    "classify": ("one_device_strategy", dict(model__task="classify", train__class_weights="balanced",
                                            data__path="{examples}/classify.jsonl")),
    "sft": ("one_device_strategy", dict(model__task="sft", data__path="{examples}/sft.jsonl")),
}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """classify.jsonl (3 classes, 6:3:1) and sft.jsonl, 200 lines each, in one directory."""
    rng = random.Random(0)
    directory = tmp_path_factory.mktemp("examples")
    words = "model token step weight batch replica worker chief shard gradient".split()
    lines = {"classify": [], "sft": []}
    for i in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(3, 9)))
        lines["classify"].append({"text": f"{i} {text}", "label": "abc"[min(2, i % 10 // 3)]})
        lines["sft"].append({"prompt": f"{i} {text}:", "completion": " " + text[::-1]})
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


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def kill_at_a_random_step(run_dir, overrides, rng):
    """Start `tfllm train` in a subprocess and SIGKILL it once it has logged step >= a random step
    and written a checkpoint."""
    kill_after = rng.randrange(7, STEPS - 7)
    command = [sys.executable, "-m", "tfllm.cli", "train", "--run-dir", run_dir, *overrides]
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    log = open(os.path.join(os.path.dirname(run_dir), "killed.log"), "w+")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            saved = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest"))
            if saved and os.path.exists(metrics) and any(r.get("step", 0) >= kill_after for r in read_metrics(run_dir)):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        log.seek(0)
        output = log.read()
        log.close()
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{output[-3000:]}"
    return kill_after


def logged_steps(run_dir, tag="train/loss"):
    """The steps of every `tag` event in the run's TensorBoard files, in order, repeats included."""
    steps = []
    for path in sorted(glob.glob(os.path.join(run_dir, "logs", "**", "*.tfevents.*"), recursive=True)):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def checkpoint_tensors(run_dir):
    path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest"))
    reader = tf.train.load_checkpoint(path)
    names = [name for name in reader.get_variable_to_shape_map() if name.startswith(("model/", "optimizer/"))]
    return path, {name: reader.get_tensor(name) for name in names}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(scenario, corpus, examples, request,  # noqa: F811
                                                               tmp_path):
    fixture, changes = SCENARIOS[scenario]
    strategy = request.getfixturevalue(fixture)
    changes = {key: value.format(examples=examples) if isinstance(value, str) else value
               for key, value in changes.items()}
    overrides = tiny(corpus, **{**RESUME, **changes})
    reference, resumed = str(tmp_path / "reference" / "run"), str(tmp_path / "resumed" / "run")
    train_in_process(strategy, reference, overrides)

    # Seeded per scenario: a failure names a kill point that can be replayed.
    rng = random.Random(scenario)
    kill_after = kill_at_a_random_step(resumed, overrides, rng)
    saved = tf.train.latest_checkpoint(os.path.join(resumed, "checkpoints", "latest"))
    assert saved, "the run was killed before its first checkpoint: nothing was resumed"
    resume_step = int(saved.rsplit("-", 1)[1])
    assert 0 < resume_step < STEPS
    console = train_in_process(strategy, resumed, overrides)
    assert f"Resuming from {saved} (step {resume_step})" in console

    reference_path, expected = checkpoint_tensors(reference)
    resumed_path, actual = checkpoint_tensors(resumed)
    assert os.path.basename(reference_path) == os.path.basename(resumed_path) == f"ckpt-{STEPS}"
    assert expected.keys() == actual.keys() and len(expected) > 10
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-6, rtol=0,
                                   err_msg=f"{name} (killed after step {kill_after}, resumed at {resume_step})")
    # The same records, losses included, before and after the resume point, and TensorBoard
    # holds each step once.
    assert sorted(logged_steps(resumed)) == logged_steps(reference) == list(range(5, STEPS + 1, 5))
    before, after = read_metrics(reference), read_metrics(resumed)
    assert [r["step"] for r in after] == [r["step"] for r in before] == list(range(5, STEPS + 1, 5))
    for a, b in zip(after, before):
        for key in ("loss", "val_loss"):
            assert (key in a) == (key in b)
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a, b, resume_step)


@pytest.mark.slow
def test_a_multi_worker_job_with_a_killed_worker_resumes_from_the_last_checkpoint(corpus, tmp_path):  # noqa: F811
    # Both workers get the same --run-dir, as on a shared file system: only the chief writes it,
    # and the other worker reads the chief's checkpoints to resume.
    run_dir = tmp_path / "run"
    latest = os.path.join(run_dir, "checkpoints", "latest")
    settings = dict(distribute__strategy="multi_worker", train__eval_every=10, train__log_every=5,
                    train__checkpoint_every=5, train__keep_checkpoints=3)
    # A job long enough to be killed in the middle.
    job = WorkerJob(tmp_path, [run_dir] * 2, tiny(corpus, train__steps=100_000, **settings), name="killed")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and all(p.poll() is None for p in job.processes):
        saved = tf.train.latest_checkpoint(latest)
        if saved and int(saved.rsplit("-", 1)[1]) >= 10:
            break
        time.sleep(0.05)
    job.processes[1].send_signal(signal.SIGKILL)  # worker 1 dies mid-run
    time.sleep(1.0)
    job.kill()  # the chief waits for it in a collective: the scheduler restarts the whole job
    outputs = job.outputs()
    assert job.processes[1].returncode == -signal.SIGKILL, "\n".join(outputs)
    saved = tf.train.latest_checkpoint(latest)
    assert saved, "\n".join(outputs)
    step = int(saved.rsplit("-", 1)[1])

    # The restarted job (with a reachable end) continues from the last checkpoint on both workers.
    outputs, weights = WorkerJob(tmp_path, [run_dir] * 2, tiny(corpus, train__steps=step + 10, **settings),
                                 name="restarted").finish()
    for output in outputs:
        assert f"Resuming from {saved} (step {step})" in output, output
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert tf.train.latest_checkpoint(latest).endswith(f"ckpt-{step + 10}")
    steps = [r["step"] for r in read_metrics(str(run_dir)) if "loss" in r]
    assert steps == list(range(5, step + 11, 5))

    # A worker that cannot see the chief's checkpoints would start over while the chief resumes:
    # every worker refuses instead of training different steps.
    job = WorkerJob(tmp_path, [run_dir, tmp_path / "elsewhere"], tiny(corpus, train__steps=step + 20, **settings),
                    name="unshared")
    try:
        for process in job.processes:
            process.wait(timeout=120)
    finally:
        job.kill()
    outputs = job.outputs()
    assert [p.returncode for p in job.processes] == [2, 2], "\n".join(outputs)
    for output in outputs:
        assert "tfllm train: error: the workers found different checkpoints to resume" in output, output


def test_resume_refuses_a_changed_config_naming_the_keys(corpus, one_device_strategy, tmp_path, capsys):  # noqa: F811
    run_dir = str(tmp_path / "run")
    overrides = tiny(corpus, train__steps=10, train__eval_every=5)
    train_in_process(one_device_strategy, run_dir, overrides)
    changed = tiny(corpus, train__steps=10, train__eval_every=5, model__hidden_dim=32, train__seed=3)
    assert cli.main(["train", "--run-dir", run_dir, *changed]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert "model.hidden_dim=16 -> 32" in message and "train.seed=0 -> 3" in message
    # Keys that may change on resume: more steps continue the same run from step 10.
    longer = tiny(corpus, train__steps=15, train__eval_every=5, train__learning_rate=1e-3)
    console = train_in_process(one_device_strategy, run_dir, longer)
    assert "(step 10)" in console
    assert [r["step"] for r in read_metrics(run_dir)] == [5, 10, 15]
    # A finished run started again has nothing left to do.
    console = train_in_process(one_device_strategy, run_dir, longer)
    assert "already at step 15" in console


def test_deterministic_turns_on_op_determinism(tmp_path):
    script = (
        # TensorFlow exports a setter but no getter; the getter lives beside it.
        "from tensorflow.python.framework.config import is_op_determinism_enabled\n"
        "from tfllm import config\n"
        "from tfllm.trainers.session import Session\n"
        "for value in ('false', 'true'):\n"
        "    c = config.load_config(None, ['train.deterministic=' + value])\n"
        f"    Session.start(c, {str(tmp_path / 'run')!r} + value)\n"
        "    print(value, is_op_determinism_enabled())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["false", "False", "true", "True"], out.stderr[-2000:]


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


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_every_worker_after_the_same_saved_step(corpus, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    latest = os.path.join(run_dir, "checkpoints", "latest")
    overrides = tiny(corpus, distribute__strategy="multi_worker", train__steps=100_000, train__eval_every=50_000,
                     train__checkpoint_every=5)
    job = WorkerJob(tmp_path, [run_dir] * 2, overrides, name="preempted")
    try:
        deadline = time.monotonic() + 240
        while tf.train.latest_checkpoint(latest) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        job.processes[1].send_signal(signal.SIGTERM)  # a preemption notice to worker 1 only
        for process in job.processes:
            process.wait(timeout=120)
    finally:
        job.kill()
    chief, worker = job.outputs()
    assert [p.returncode for p in job.processes] == [130, 130], chief + worker
    match = re.search(r"tfllm train: stopped by SIGTERM at step (\d+); the newest checkpoint is (\S+);", chief)
    assert match, chief
    step, saved = int(match[1]), match[2]
    assert saved == tf.train.latest_checkpoint(latest) and saved.endswith(f"ckpt-{step}")
    assert f"tfllm train: stopped by SIGTERM at step {step}; the chief saved this step" in worker, worker


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

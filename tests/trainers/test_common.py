"""A diverging or signalled run stops with a usable checkpoint; a run that cannot write its
checkpoints does not start."""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import tensorflow as tf

from tests.trainers.run_testing import (  # noqa: F401  (corpus: a fixture)
    CAUSAL_LM_RUN, CAUSAL_LM_STEPS, REPO, corpus, logged_steps, tiny)
from tfllm import cli
from tfllm.trainers import fit


def train(run_dir, overrides, capsys):
    code = cli.main(["train", "--run-dir", run_dir, *overrides])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def steps_logged(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r["step"] for r in map(json.loads, f)]


def test_a_diverging_run_stops_at_the_step_and_resumes_from_the_last_good_checkpoint(causal_lm_run, tmp_path,
                                                                                      capsys):
    # A copy of the session's trained run: 4 steps, a checkpoint at step 4, metrics every 2 steps.
    run_dir = str(tmp_path / "run")
    shutil.copytree(causal_lm_run, run_dir)
    good = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest"))
    assert good.endswith(f"ckpt-{CAUSAL_LM_STEPS}") and steps_logged(run_dir) == [2, 4]
    longer = [*CAUSAL_LM_RUN, "train.steps=8", "train.log_every=4"]

    # A learning rate of 1e30 overflows the weights at the first update (step 5): the loss the
    # next step computes from them is NaN, at a step whose metrics are due (every 2 steps):
    # nothing of it is written, neither weights nor metrics.
    code, _, err = train(run_dir, [*longer, "train.log_every=2", "train.learning_rate=1e30"], capsys)
    assert code == 2 and "\n" not in err, err
    assert "the training loss became nan at step 6" in err
    assert f"the last good checkpoint is {good}" in err and "lower train.learning_rate" in err
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest")) == good
    assert steps_logged(run_dir) == [2, 4] and 6 not in logged_steps(run_dir)

    # The run dir stays resumable: the same run with a sane learning rate continues from step 4.
    code, out, _ = train(run_dir, longer, capsys)
    assert code == 0 and f"Resuming from {good} (step 4)" in out
    assert steps_logged(run_dir) == [2, 4, 8]


def test_too_little_free_disk_for_the_kept_checkpoints_is_refused(corpus, tmp_path, monkeypatch, capsys):  # noqa: F811
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(fit.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**10, 2**10))
    run_dir = str(tmp_path / "run")
    code, _, err = train(run_dir, tiny(corpus, train__keep_checkpoints=4), capsys)
    assert code == 2 and "\n" not in err, err
    assert f"{run_dir} has 0 MiB free, the 6 checkpoints" in err and "lower train.keep_checkpoints" in err
    assert not os.path.exists(os.path.join(run_dir, "checkpoints", "latest", "checkpoint"))


def test_a_run_dir_that_cannot_be_written_is_refused(corpus, tmp_path, monkeypatch, capsys):  # noqa: F811
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = train(str(blocker / "run"), tiny(corpus), capsys)
    assert code == 2 and "\n" not in err, err
    assert f"cannot create run dir {blocker / 'run'}" in err and "choose a writable --run-dir" in err
    assert blocker.read_text() == "not a directory"

    # Permission bits do not bind root; what os.access answers is what the trainer checks.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    code, _, err = train(str(tmp_path / "locked"), tiny(corpus), capsys)
    assert code == 2 and f"run dir {tmp_path / 'locked'} is not writable" in err, err


def test_sigterm_saves_the_step_exits_130_and_the_same_command_resumes(corpus, tmp_path, capsys):  # noqa: F811
    # SIGINT takes the same path (tests/callbacks/test_checkpointer.py sends both).
    signal_number = signal.SIGTERM
    run_dir = str(tmp_path / "run")
    # One layer: a run's time is mostly tracing, which grows with the layers.
    overrides = tiny(corpus, model__num_layers=1, train__steps=2000, train__eval_every=1000, train__log_every=5)
    process = subprocess.Popen([sys.executable, "-m", "tfllm.cli", "train", "--run-dir", run_dir, *overrides],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        metrics = os.path.join(run_dir, "metrics.jsonl")
        while time.monotonic() < deadline and not (os.path.exists(metrics) and steps_logged(run_dir)):
            time.sleep(0.05)
        process.send_signal(signal_number)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    last = err.strip().splitlines()[-1]
    assert process.returncode == 130, err[-2000:]
    name = signal.Signals(signal_number).name
    match = re.fullmatch(rf"tfllm train: stopped by {name} at step (\d+); the newest checkpoint is (\S+); "
                         "run the same command again to resume", last)
    assert match, last
    step, saved = int(match[1]), match[2]
    assert saved == tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest"))
    assert saved.endswith(f"ckpt-{step}") and step >= 5

    # The same command (with a reachable end) continues from that step.
    code, out, _ = train(run_dir, tiny(corpus, model__num_layers=1, train__steps=step + 5, train__eval_every=1000,
                                       train__log_every=5), capsys)
    assert code == 0 and f"Resuming from {saved} (step {step})" in out

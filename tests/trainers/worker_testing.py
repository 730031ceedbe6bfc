"""Local multi-worker jobs: worker processes on localhost ports, and `tfllm train` in 2 of them,
each writing its final weights to a `.npz` file."""

import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from tests.trainers.run_testing import REPO

# A worker's first lines: no graph optimisation of the tiny graphs, as in the test processes
# (tests/conftest.py, GRAPPLER_OFF).
WITHOUT_GRAPPLER = """
import tensorflow as tf
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
"""

# `tfllm train` with the model's final weights saved to argv[1], and a pause of
# $STEP_PAUSE_SECONDS after every step (a job slow enough to be killed at a chosen step).
WORKER = WITHOUT_GRAPPLER + """
import os
import sys
import tempfile
import time
import keras
import numpy as np
from tfllm import cli
from tfllm.trainers import fit
from tfllm.trainers import train as program

train = program.train
make_callbacks = fit.make_callbacks
pause = float(os.environ.get("STEP_PAUSE_SECONDS", 0))

def paused_callbacks(*args):
    callbacks, state, verbose = make_callbacks(*args)
    callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: time.sleep(pause)))
    return callbacks, state, verbose

def train_and_save(config, run_dir, written_keys=None):
    model, tokenizer = train(config, run_dir, written_keys)
    np.savez(sys.argv[1], *[w.numpy() for w in model.weights])
    return model, tokenizer

program.train = train_and_save
if pause:
    fit.make_callbacks = paused_callbacks
sys.exit(cli.main(sys.argv[2:]))
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def one_job_at_a_time():
    """An exclusive lock shared by the suite's test processes (pytest-xdist workers), held while
    a job's workers run: the workers of a job step in lockstep, and two jobs (four processes)
    sharing the cores with the other tests stall each other's collectives for minutes. Released
    by closing the returned file; after 10 minutes of waiting (a failed test that never released
    it) the job starts anyway."""
    lock = open(os.path.join(tempfile.gettempdir(), f"tfllm-tests-{os.getuid()}-worker-jobs.lock"), "w")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.1)
    return lock


class LocalWorkers:
    """The worker processes of one `MultiWorkerMirroredStrategy` cluster on localhost ports;
    `arguments[i]` is worker i's command line after `python`."""

    def __init__(self, tmp_path, arguments, name="job", env=None):
        self._lock = one_job_at_a_time()
        addresses = [f"127.0.0.1:{port}" for port in free_ports(len(arguments))]
        self.processes, self.logs = [], []
        for index, argv in enumerate(arguments):
            worker_env = dict(os.environ, **(env or {}), TF_CONFIG=json.dumps(
                {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
            ))
            # Output goes to files: a full pipe would block a worker and, with it, the collectives.
            self.logs.append(open(tmp_path / f"{name}-worker{index}.log", "w+"))
            self.processes.append(
                subprocess.Popen([sys.executable, *argv], cwd=REPO, env=worker_env, stdout=self.logs[-1],
                                 stderr=subprocess.STDOUT)
            )

    def wait(self, timeout):
        """Wait for every worker (stopping early when one fails); returns whether time ran out."""
        deadline = time.monotonic() + timeout
        try:
            for process in self.processes:
                process.wait(timeout=max(deadline - time.monotonic(), 1))
                if process.returncode:
                    break  # the other worker would wait for it until the deadline
        except subprocess.TimeoutExpired:
            return True
        finally:
            self.kill()
        return False

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self._lock.close()  # the next job, in this test process or another, may start

    def outputs(self):
        """Each worker's console output (its last 3,000 characters), labelled."""
        texts = []
        for index, log in enumerate(self.logs):
            log.seek(0)
            texts.append(f"--- worker {index}, exit code {self.processes[index].returncode}:\n{log.read()[-3000:]}")
        return texts

    def finish(self, timeout=300):
        """Wait for workers that must succeed; returns each worker's console output."""
        timed_out = self.wait(timeout)
        outputs = self.outputs()
        for log in self.logs:
            log.close()
        assert [process.returncode for process in self.processes] == [0] * len(self.processes), (
            f"timed out after {timeout}s\n" * timed_out + "\n".join(outputs)
        )
        return outputs


class WorkerJob(LocalWorkers):
    """`tfllm train` in two worker processes; `run_dirs[i]` is worker i's --run-dir, and each
    step is followed by a pause of `step_pause` seconds."""

    def __init__(self, tmp_path, run_dirs, overrides, name="job", step_pause=0.0):
        self.weights = [tmp_path / f"{name}-weights{index}.npz" for index in range(2)]
        super().__init__(tmp_path, [
            ["-c", WORKER, str(self.weights[index]), "train", "--run-dir", str(run_dirs[index]), *overrides]
            for index in range(2)
        ], name, {"STEP_PAUSE_SECONDS": str(step_pause)})

    def finish(self, timeout=300):
        """Wait for a job that must succeed; returns its outputs and each worker's final weights."""
        return super().finish(timeout), [load_weights(path) for path in self.weights]


def load_weights(path):
    arrays = np.load(path)
    return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

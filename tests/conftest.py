import os

# Quiet TensorFlow's C++ logging and keep tests on the CPU the suite is sized for.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One thread per op: the test models are tiny, and the suite runs one worker process per core
# (pytest.ini), some starting training subprocesses of their own; TensorFlow's default of a
# thread per core in every process oversubscribes the cores several times over. Subprocesses
# inherit the setting.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
# The same for PyTorch (the `transformers` references of tests/huggingface/): its OpenMP threads
# spin while they wait, and one per core in each of the workers stalled a 0.2 s test for a minute
# (10:28 -> 9:24 for the whole suite).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# And for `tokenizers` (Rust, Rayon), which trains the reference tokenizers of tests/huggingface/.
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices for the whole session, so mirrored training runs (and is compared with
# one device) on a machine without accelerators. Must happen before TensorFlow starts its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

# No graph optimisation (Grappler) for the tiny graphs of the tests: optimising each traced
# function costs more than it saves on a few steps of a tiny model (a fifth of the time of the
# in-process training tests). Results stay those of the same ops; a test about the rounding of
# the product's optimised graphs asks for `grappler`.
GRAPPLER_OFF = {"disable_meta_optimizer": True}
tf.config.optimizer.set_experimental_options(GRAPPLER_OFF)


# The longest files (minutes each; multi-process jobs) start first. Each file runs in one worker
# (pytest.ini: --dist loadfile, --no-loadscope-reorder), so a long file started last would leave
# the other worker idle at the end; the short ones fill in behind them.
LONGEST_FIRST = ("tests/trainers/test_resume.py", "tests/trainers/test_distributed_training.py",
                 "tests/test_train_step_weighting.py", "tests/huggingface/test_import_checkpoint.py",
                 "tests/trainers/test_finetune.py")


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker more than the cores (at most 8). A share of the suite waits rather than
    computes (subprocesses starting, worker jobs taking turns), and a third worker fills that time
    on two cores: 10.4 min instead of 11.2."""
    return min(len(os.sched_getaffinity(0)) + 1, 8)


def pytest_collection_modifyitems(config, items):
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: others keep order


@pytest.fixture(autouse=True)
def float32_policy():
    """Every test starts in float32, whatever the previous one set."""
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def graph_mode_decoding(monkeypatch):
    """`Generator(jit_compile="auto")` decodes in graph mode in tests: XLA compiles each batch
    size and buffer bucket for seconds, which the suite's many tiny generations cannot afford.
    The XLA path has tests of its own (`jit_compile=True`), and the exported model compiles it."""
    monkeypatch.setattr("tfllm.generator.xla_pays_for_decoding", lambda: False)


@pytest.fixture
def grappler():
    """Graph optimisation as the product runs it, for this test only (see GRAPPLER_OFF)."""
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})
    yield
    tf.config.optimizer.set_experimental_options(GRAPPLER_OFF)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One 2-replica CPU MirroredStrategy per session: strategies created one after another in a
    process can hand out clashing collective instance keys."""
    from tfllm import distribute

    return distribute.make_strategy("mirrored", cpu_replicas=2)


@pytest.fixture(scope="session")
def one_device_strategy():
    from tfllm import distribute

    return distribute.make_strategy("one_device")


@pytest.fixture(scope="session")
def causal_lm_run(tmp_path_factory):
    """The run dir of one tiny causal LM trained by `tfllm train` with
    tests/trainers/run_testing.py's `CAUSAL_LM_RUN`, once for the whole session and shared by every
    test that needs "a trained run" and asserts none of its training settings. Tests must not
    write into it: copy it first."""
    from tests.trainers.run_testing import CAUSAL_LM_RUN
    from tfllm import cli

    def train(directory):
        assert cli.main(["train", "--run-dir", str(directory / "run"), *CAUSAL_LM_RUN]) == 0

    return str(once_per_session(tmp_path_factory, "causal_lm_run", train) / "run")


@pytest.fixture(scope="session")
def causal_lm_export(causal_lm_run, tmp_path_factory):
    """`tfllm export` of `causal_lm_run`, once for the whole session: EXPORT_DIR/1/. Tests must
    not write into it: copy it first."""
    from tfllm import cli

    def export(directory):
        # The export dir's name is the served model's name: /v1/models/tiny:predict.
        assert cli.main(["export", "--run-dir", causal_lm_run, "--out", str(directory / "tiny")]) == 0

    out = str(once_per_session(tmp_path_factory, "causal_lm_export", export) / "tiny")
    assert os.path.isfile(os.path.join(out, "1", "saved_model.pb"))
    return out


def once_per_session(tmp_path_factory, name, make):
    """`make(directory)` run once per test session, by whichever worker process asks first; the
    others wait for it and share `directory` (under the session's temporary directory, which
    pytest-xdist's workers share)."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            directory.mkdir()
            make(directory)
            done.touch()
    return directory


@pytest.fixture(scope="session")
def seq2seq_run(tmp_path_factory):
    """The run dir of one tiny encoder-decoder trained by `tfllm train` to reverse sequences of
    words (tests/trainers/run_testing.py's `SEQ2SEQ_RUN` on `reversal_pairs`), once for the
    whole session; its training pairs are RUN_DIR/../train.jsonl. Tests must not write into it
    (`tfllm evaluate` writes its reports there, under names no other test uses): copy it first."""
    from tests.trainers.run_testing import SEQ2SEQ_RUN, reversal_pairs, write_pairs
    from tfllm import cli

    def train(directory):
        data = write_pairs(directory / "train.jsonl", reversal_pairs(640, seed=0))
        assert cli.main(["train", "--run-dir", str(directory / "run"), f"data.path={data}", *SEQ2SEQ_RUN]) == 0

    return str(once_per_session(tmp_path_factory, "seq2seq_run", train) / "run")


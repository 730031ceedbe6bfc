"""One tiny trained run and its export, shared by every test of export/."""

import os

import pytest

from tests.export.export_testing import MAX_LENGTH, TINY
from tfllm import cli
from tfllm.run import Run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("export_run") / "tiny")
    assert cli.main(["train", "--run-dir", run_dir, *TINY]) == 0
    return run_dir


@pytest.fixture(scope="session")
def trained(run_dir):
    """(config, tokenizer, model) of the run, as `tfllm generate` loads them."""
    run = Run.open(run_dir)
    config, tokenizer = run.config, run.tokenizer
    model, _ = run.load_model()
    assert config.max_seq_len == MAX_LENGTH
    return config, tokenizer, model


@pytest.fixture(scope="session")
def export_dir(run_dir, tmp_path_factory):
    """`tfllm export` of the run: EXPORT_DIR/1/."""
    out = str(tmp_path_factory.mktemp("exports") / "tiny")
    assert cli.main(["export", "--run-dir", run_dir, "--out", out]) == 0
    assert os.path.isfile(os.path.join(out, "1", "saved_model.pb"))
    return out

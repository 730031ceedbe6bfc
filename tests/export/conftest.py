"""The session's tiny trained run (`causal_lm_run`, tests/conftest.py) and its export, as the
tests of export/ use them."""

import pytest

from tests.export.export_testing import MAX_LENGTH
from tfllm.run import Run


@pytest.fixture(scope="session")
def run_dir(causal_lm_run):
    return causal_lm_run


@pytest.fixture(scope="session")
def trained(run_dir):
    """(config, tokenizer, model) of the run, as `tfllm generate` loads them."""
    run = Run.open(run_dir)
    config, tokenizer = run.config, run.tokenizer
    model, _ = run.load_model()
    assert config.max_seq_len == MAX_LENGTH
    return config, tokenizer, model


@pytest.fixture(scope="session")
def export_dir(causal_lm_export):
    """`tfllm export` of the run: EXPORT_DIR/1/."""
    return causal_lm_export

"""`configs/llama-tiny.yaml`: a Llama-shaped model trains from scratch and generates like a GPT."""

import contextlib
import io

import numpy as np

from tests.trainers.run_testing import corpus, read_metrics, tiny  # noqa: F401  (corpus: a fixture)
from tfllm import cli
from tfllm.run import Run


def test_the_llama_tiny_config_trains_and_generates_a_llama_shaped_model(corpus, tmp_path):  # noqa: F811
    run_dir = str(tmp_path / "llama")
    overrides = tiny(corpus, model__num_heads=4, model__intermediate_dim=24, train__steps=10,
                     train__learning_rate=1e-2)
    assert cli.main(["train", "--config", "llama-tiny", "--run-dir", run_dir, *overrides]) == 0
    model, _ = Run.open(run_dir).load_model(prefer_best=False)
    backbone = model.backbone
    assert (backbone.norm, backbone.mlp, backbone.num_key_value_heads, backbone.tie_embeddings) == (
        "rms", "swiglu", 2, False)
    losses = [r["loss"] for r in read_metrics(run_dir) if "loss" in r]
    assert len(losses) == 2 and np.isfinite(losses).all() and losses[-1] < losses[0]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert cli.main(["generate", "--run-dir", run_dir, "--prompt", "The", "--max-new-tokens", "5"]) == 0
    assert console.getvalue().startswith("The")

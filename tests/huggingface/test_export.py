"""tfllm models written as Hugging Face checkpoints load in `transformers` with the same logits."""

import numpy as np
import pytest

from tests.huggingface.conftest import torch, transformers
from tests.huggingface.test_checkpoint import IDS, MASK, reference_logits
from tfllm.errors import UserError
from tfllm.huggingface import load_causal_lm, load_model, save_pretrained
from tfllm.models import CausalLM, GPTBackbone

REAL = MASK.astype(bool)


def logits_of(lm):
    return lm({"token_ids": IDS, "padding_mask": MASK}).numpy()


@pytest.mark.parametrize("name", ["gpt2", "llama", "llama3", "llama_tied", "mistral", "qwen2", "bert"])
def test_import_then_export_gives_transformers_the_same_model(name, checkpoints, tmp_path):
    directory, reference = checkpoints[name]
    save_pretrained(load_model(directory), str(tmp_path / "out"))
    auto = transformers.AutoModelForMaskedLM if name == "bert" else transformers.AutoModelForCausalLM
    reloaded = auto.from_pretrained(tmp_path / "out").eval()
    np.testing.assert_allclose(reference_logits(reloaded, IDS, MASK)[REAL], reference_logits(reference, IDS, MASK)[REAL],
                               atol=1e-5, rtol=0)


def test_a_llama_shaped_model_trained_from_scratch_exports(tmp_path):
    torch.manual_seed(0)
    backbone = GPTBackbone(vocabulary_size=96, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=48,
                           max_sequence_length=64, position="rope", rope_theta=500000.0, norm="rms",
                           norm_epsilon=1e-6, mlp="swiglu", num_key_value_heads=2, use_bias=False,
                           tie_embeddings=False)
    # Weights of order 1, so that a misplaced head or a wrong scale shows.
    for variable in backbone.weights:
        variable.assign(np.random.default_rng(len(variable.path)).normal(0, 0.3, variable.shape))
    lm = CausalLM(backbone)
    save_pretrained(lm, str(tmp_path / "llama"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "llama").eval()
    assert isinstance(reloaded, transformers.LlamaForCausalLM)
    assert np.abs(logits_of(lm)).max() > 1.0
    np.testing.assert_allclose(reference_logits(reloaded, IDS, MASK)[REAL], logits_of(lm)[REAL], atol=1e-4, rtol=0)


def test_a_model_of_no_hugging_face_family_is_refused_and_nothing_is_written(tmp_path, checkpoints):
    rope_gpt = GPTBackbone(vocabulary_size=96, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                           max_sequence_length=16, position="rope")
    with pytest.raises(UserError, match=r"no Hugging Face family tfllm writes \(gpt2: position='learned'"):
        save_pretrained(CausalLM(rope_gpt), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match=r"taken already exists"):
        save_pretrained(load_causal_lm(checkpoints["gpt2"][0]), str(tmp_path / "taken"))

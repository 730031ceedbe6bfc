"""Imported checkpoints give the logits and greedy tokens of `transformers` itself."""

import json
import shutil

import numpy as np
import pytest

from tests.huggingface.conftest import CAUSAL, CHECKPOINTS, VOCAB, torch, transformers
from tfllm.errors import UserError
from tfllm.generator import Generator
from tfllm.huggingface import load_causal_lm, load_model
from tfllm.samplers import GreedySampler

IDS = np.random.default_rng(0).integers(0, VOCAB, (3, 9)).astype("int32")
MASK = np.ones_like(IDS)
MASK[0, -3:] = 0  # right padding: positions of real tokens are unchanged on both sides


def reference_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits.numpy()


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_logits_equal_transformers_on_a_padded_batch(name, checkpoints):
    directory, reference = checkpoints[name]
    lm = load_model(directory)  # a CausalLM, or BERT's MaskedLM
    got = lm({"token_ids": IDS, "padding_mask": MASK}).numpy()
    want = reference_logits(reference, IDS, MASK)
    assert np.abs(want).max() > 1.0  # logits large enough for the tolerance to mean something
    real = MASK.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", CAUSAL)
def test_greedy_generation_equals_transformers(name, checkpoints):
    directory, reference = checkpoints[name]
    prompts = IDS[:, :5]
    with torch.no_grad():
        want = reference.generate(torch.tensor(prompts, dtype=torch.long), attention_mask=torch.ones(prompts.shape),
                                  do_sample=False, max_new_tokens=32, min_new_tokens=32, eos_token_id=None,
                                  pad_token_id=0).numpy()[:, 5:]
    generator = Generator(load_causal_lm(directory), tokenizer=None, max_length=64)
    got = generator.generate_from_ids(prompts.tolist(), 32, GreedySampler(), stop_token_ids=())
    assert got == want.tolist()


def test_a_bfloat16_and_a_sharded_checkpoint_import(checkpoints, tmp_path):
    directory, reference = checkpoints["llama"]
    bf16 = tmp_path / "bf16"
    transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).save_pretrained(bf16)
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"
    sharded = tmp_path / "sharded"
    reference.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").exists()
    want = reference_logits(reference, IDS, MASK)[MASK.astype(bool)]
    got = load_causal_lm(str(sharded))({"token_ids": IDS, "padding_mask": MASK}).numpy()[MASK.astype(bool)]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # bf16 weights: the reference is the same bf16 weights in float32.
    rounded = transformers.LlamaForCausalLM.from_pretrained(bf16, dtype=torch.float32).eval()
    got = load_causal_lm(str(bf16))({"token_ids": IDS, "padding_mask": MASK}).numpy()[MASK.astype(bool)]
    np.testing.assert_allclose(got, reference_logits(rounded, IDS, MASK)[MASK.astype(bool)], atol=1e-4, rtol=0)


def copy_of(checkpoints, name, tmp_path):
    directory = tmp_path / name
    shutil.copytree(checkpoints[name][0], directory)
    return directory


def edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def test_bad_checkpoints_are_one_clear_error(checkpoints, tmp_path):
    with pytest.raises(UserError, match=r"config.json does not exist"):
        load_causal_lm(str(tmp_path))
    unknown = copy_of(checkpoints, "gpt2", tmp_path)
    edit_config(unknown, model_type="mixtral")
    with pytest.raises(UserError, match=r"model_type='mixtral' is not supported; tfllm imports gpt2 .*llama .*mistral .*qwen2"):
        load_causal_lm(str(unknown))
    wrong_shape = copy_of(checkpoints, "llama", tmp_path)
    edit_config(wrong_shape, intermediate_size=40)
    with pytest.raises(UserError, match=r"has shape \(32, 48\), the model expects \(32, 40\)"):
        load_causal_lm(str(wrong_shape))
    no_weights = copy_of(checkpoints, "gpt2", tmp_path / "w")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"has no model.safetensors nor model.safetensors.index.json"):
        load_causal_lm(str(no_weights))
    scaled = copy_of(checkpoints, "llama", tmp_path / "s")
    edit_config(scaled, rope_parameters={"rope_type": "yarn", "rope_theta": 500000.0, "factor": 8.0})
    with pytest.raises(UserError, match=r"rope scaling 'yarn' is not supported; tfllm imports"):
        load_causal_lm(str(scaled))
    windowed = copy_of(checkpoints, "mistral", tmp_path / "m")
    edit_config(windowed, sliding_window=16)
    with pytest.raises(UserError, match=r"sliding_window=16 is shorter than max_position_embeddings=64"):
        load_causal_lm(str(windowed))


def test_a_weight_of_an_integer_dtype_is_refused_naming_it(checkpoints, tmp_path):
    from safetensors.numpy import load_file, save_file

    broken = copy_of(checkpoints, "gpt2", tmp_path)
    tensors = load_file(str(broken / "model.safetensors"))
    name = next(n for n in tensors if n.endswith("ln_f.weight"))
    tensors[name] = tensors[name].astype(np.int64)
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match=f"tensor '{name}' holds I64 values, not weights"):
        load_causal_lm(str(broken))


def test_a_masked_lm_checkpoint_is_not_a_causal_lm(checkpoints):
    with pytest.raises(UserError, match=r"holds a bert checkpoint, a masked_lm model; a causal_lm model is needed"):
        load_causal_lm(checkpoints["bert"][0])


def test_a_missing_shard_is_named(checkpoints, tmp_path):
    sharded = tmp_path / "sharded"
    checkpoints["llama"][1].save_pretrained(sharded, max_shard_size="20KB")
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(UserError, match=f"{shard.name} is missing: download every shard"):
        load_causal_lm(str(sharded))


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_tables_read_in_blocks_of_rows_give_the_same_logits(name, checkpoints, monkeypatch):
    """Large tables (token and position embeddings, an untied head) are read a block of rows at a
    time to bound peak memory; tiny blocks here, with a last block shorter than the others."""
    from tfllm.huggingface import checkpoint

    monkeypatch.setattr(checkpoint, "CHUNK_BYTES", 0)
    monkeypatch.setattr(checkpoint, "CHUNK_ROWS", 7)
    directory, reference = checkpoints[name]
    got = load_model(directory, max_sequence_length=40)({"token_ids": IDS, "padding_mask": MASK}).numpy()
    real = MASK.astype(bool)
    np.testing.assert_allclose(got[real], reference_logits(reference, IDS, MASK)[real], atol=1e-4, rtol=0)

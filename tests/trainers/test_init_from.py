"""`train.init_from`: the pretrained run fixes the model shape and tokenizer; a key the user set
that contradicts it is refused, naming it."""

import os

import pytest

from tfllm import config as config_lib
from tfllm.errors import UserError
from tfllm.run import Run
from tfllm.trainers import init_from

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def bert_tiny(tmp_path):
    """A run dir holding the resolved config of configs/bert-tiny.yaml (resolving reads nothing else)."""
    run = Run(str(tmp_path / "bert-tiny")).create()
    run.save_config(config_lib.load_config(os.path.join(REPO, "configs", "bert-tiny.yaml")))
    return run.path


def resolve(overrides, path=None):
    config = config_lib.load_config(path, overrides)
    return init_from.resolve(config, config_lib.written_keys(path, overrides))


def test_a_classifier_takes_the_shape_and_tokenizer_of_the_run_it_starts_from(bert_tiny):
    config, pretrained = resolve(["model.task=classify", "data.path=builtin:stdlib-packages",
                                  f"train.init_from={bert_tiny}"])
    bert = pretrained.config
    assert pretrained.path == bert_tiny
    for key in init_from.FIXED_MODEL_KEYS + ("seq_len",):
        assert getattr(config.model, key) == getattr(bert.model, key), key
    assert (config.data.tokenizer, config.data.vocab_size) == ("wordpiece", 2048) == (bert.data.tokenizer,
                                                                                      bert.data.vocab_size)
    assert config.model.position == "learned" and config.max_seq_len == bert.max_seq_len
    # What the pretrained run does not fix stays the fine-tuning run's own.
    assert config.data.path == "builtin:stdlib-packages" and config.model.task == "classify"


def test_the_shipped_fine_tuning_configs_resolve_against_their_pretrained_configs(bert_tiny):
    path = os.path.join(REPO, "configs", "classify-tiny.yaml")
    config, _ = resolve([f"train.init_from={bert_tiny}"], path)
    assert config.model.hidden_dim == 128 and config.model.dropout == 0.1 and config.data.tokenizer == "wordpiece"


def test_a_key_set_against_the_pretrained_run_is_refused_naming_it(bert_tiny):
    with pytest.raises(UserError) as error:
        resolve(["model.task=classify", f"train.init_from={bert_tiny}", "model.position=rope"])
    assert str(error.value).startswith(
        f"train.init_from={bert_tiny} has another shape or tokenizer: model.position='rope' (pretrained: 'learned')")
    # Set to the pretrained value, the same key is accepted; a training length inside the context too.
    config, _ = resolve(["model.task=classify", f"train.init_from={bert_tiny}", "model.position=learned",
                         "model.seq_len=64"])
    assert config.model.seq_len == 64 and config.max_seq_len == 128


def test_without_written_keys_a_key_differing_from_its_default_counts_as_set(bert_tiny):
    config = config_lib.load_config(None, ["model.task=classify", f"train.init_from={bert_tiny}",
                                           "model.hidden_dim=64"])
    with pytest.raises(UserError, match=r"model.hidden_dim=64 \(pretrained: 128\)"):
        init_from.resolve(config)
    resolved, _ = init_from.resolve(config_lib.load_config(None, ["model.task=classify",
                                                                  f"train.init_from={bert_tiny}"]))
    assert resolved.model.position == "learned"


def test_fine_tuning_a_llama_shaped_run_inherits_its_architecture(tmp_path):
    run = Run(str(tmp_path / "llama-tiny")).create()
    run.save_config(config_lib.load_config(os.path.join(REPO, "configs", "llama-tiny.yaml")))
    config, _ = resolve(["model.task=sft", "data.path=builtin:python-docs-topics", f"train.init_from={run.path}"])
    m = config.model
    assert (m.norm, m.mlp, m.num_kv_heads, m.use_bias, m.tie_embeddings, m.position) == (
        "rms", "swiglu", 2, False, False, "rope")
    with pytest.raises(UserError, match=r"model.mlp='gelu_tanh' \(pretrained: 'swiglu'\)"):
        resolve(["model.task=sft", f"train.init_from={run.path}", "model.mlp=gelu_tanh"])


def test_an_imported_qwen2_or_llama3_run_passes_on_its_biases_rope_scaling_and_pooler(tmp_path):
    scaling = "{rope_type: llama3, factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, " \
              "original_max_position_embeddings: 16}"
    pretrained = tmp_path / "pretrained.yaml"
    pretrained.write_text(f"model:\n  position: rope\n  use_bias: false\n  qkv_bias: true\n  pooler: true\n"
                          f"  rope_scaling: {scaling}\n")
    run = Run(str(tmp_path / "imported")).create()
    run.save_config(config_lib.load_config(str(pretrained)))
    config, _ = resolve(["model.task=sft", f"train.init_from={run.path}"])
    m = config.model
    assert (m.qkv_bias, m.pooler, m.use_bias) == (True, True, False)
    assert m.rope_scaling == config_lib.load_config(str(pretrained)).model.rope_scaling
    assert m.rope_scaling["factor"] == 8.0

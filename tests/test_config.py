import dataclasses

import pytest
import yaml

from tfllm import config as config_lib
from tfllm.config import load_config, save_config
from tfllm.errors import UserError


LLAMA3 = ("{rope_type: llama3, factor: 8, low_freq_factor: 1, high_freq_factor: 4, "
          "original_max_position_embeddings: 8192}")


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_and_file_and_overrides_layer(tmp_path):
    path = write(tmp_path, "model:\n  num_layers: 3\ntrain:\n  steps: 40\n")
    config = load_config(path, ["train.steps=7", "train.learning_rate=1e-3", "data.path=docs/*.txt"])
    assert config.model.num_layers == 3
    assert config.train.steps == 7
    assert config.train.learning_rate == pytest.approx(1e-3)
    assert config.data.path == "docs/*.txt"
    assert config.model.hidden_dim == config_lib.ModelConfig().hidden_dim


def test_int_accepted_for_float_and_converted(tmp_path):
    config = load_config(write(tmp_path, "train:\n  learning_rate: 1\n"))
    assert isinstance(config.train.learning_rate, float)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config().train.steps = 3


def test_save_and_load_round_trip(tmp_path):
    config = load_config(None, ["model.position=rope", "data.val_path=v.txt"])
    save_config(config, str(tmp_path / "config.yaml"))
    assert load_config(str(tmp_path / "config.yaml")) == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_every_field_is_documented():
    docs = list(config_lib.field_docs())
    assert len(docs) > 30
    assert all(doc for _, _, doc in docs)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train:\n  stpes: 3\n", r"c\.yaml: unknown key 'train\.stpes'; did you mean 'train\.steps'"),
        ("trian:\n  steps: 3\n", r"unknown section 'trian'; did you mean 'train'"),
        ("train:\n  steps: many\n", r"train\.steps must be int, got 'many'"),
        ("train:\n  steps: true\n", r"train\.steps must be int, got True"),
        ("model:\n  num_heads: 3\n", r"model\.num_heads=3 is invalid: it must divide model\.hidden_dim=128"),
        ("model:\n  seq_len: 512\n  max_seq_len: 256\n", r"model\.seq_len=512 is invalid.*max_seq_len=256"),
        ("model:\n  position: alibi\n", r"model\.position='alibi'.*learned, rope"),
        ("model:\n  num_kv_heads: 3\n", r"model\.num_kv_heads=3 is invalid: it must divide model\.num_heads=4"),
        ("model:\n  norm: batch\n", r"model\.norm='batch' is invalid: use one of layer, rms"),
        ("model:\n  mlp: relu\n", r"model\.mlp='relu' is invalid: use one of gelu_tanh, gelu, swiglu"),
        ("model:\n  norm_position: sandwich\n", r"model\.norm_position='sandwich'.*pre, post"),
        ("model:\n  rope_theta: 0\n", r"model\.rope_theta=0\.0 is invalid"),
        ("data:\n  tokenizer: bytes\n", r"data\.tokenizer='bytes'.*char, wordpiece, bpe, sentencepiece"),
        ("model:\n  qkv_bias: 1\n", r"model\.qkv_bias must be bool or null, got 1"),
        ("model:\n  pooler: null\n", r"model\.pooler must be bool, got None"),
        ("model:\n  rope_scaling: 8\n", r"model\.rope_scaling must be a mapping or null, got 8"),
        (f"model:\n  rope_scaling: {LLAMA3}\n", r"model\.rope_scaling is set and model\.position='learned'.*"
                                                r"set model\.position: rope"),
        (f"model:\n  position: rope\n  rope_scaling: {{factr: 8, {LLAMA3[1:]}\n",
         r"unknown key 'factr' in model\.rope_scaling; did you mean 'model\.rope_scaling\.factor'"),
        ("model:\n  position: rope\n  rope_scaling: {rope_type: llama3, factor: 8}\n",
         r"model\.rope_scaling lacks low_freq_factor, high_freq_factor, original_max_position_embeddings"),
        (f"model:\n  position: rope\n  rope_scaling: {LLAMA3.replace('llama3', 'yarn')}\n",
         r"model\.rope_scaling\.rope_type='yarn' is invalid: use one of llama3"),
        (f"model:\n  position: rope\n  rope_scaling: {LLAMA3.replace('factor: 8', 'factor: 0')}\n",
         r"model\.rope_scaling\.factor=0\.0 is invalid: use a positive value"),
        (f"model:\n  position: rope\n  rope_scaling: {LLAMA3.replace('factor: 8', 'factor: true')}\n",
         r"model\.rope_scaling\.factor must be int or float, got True"),
        (f"model:\n  position: rope\n  rope_scaling: {LLAMA3.replace('high_freq_factor: 4', 'high_freq_factor: 1')}\n",
         r"model\.rope_scaling\.high_freq_factor=1\.0 is invalid: use a value above low_freq_factor=1\.0"),
        (f"model:\n  position: rope\n  rope_scaling: {LLAMA3.replace('8192', '81.5')}\n",
         r"model\.rope_scaling\.original_max_position_embeddings must be int, got 81\.5"),
        ("train:\n  batch_size: 0\n", r"train\.batch_size=0 is invalid"),
        ("train:\n  lora_rank: 8\n", r"train\.lora_rank=8 is invalid: adapters train on a pretrained backbone; "
                                     r"set train\.init_from"),
        ("train:\n  init_from: r\n  lora_rank: 8\n  lora_targets: [query, gate]\n",
         r"train\.lora_targets='query,gate' is invalid: use names among query, key, value, attention_output, mlp"),
        ("train:\n  init_from: r\n  lora_rank: 8\n  lora_targets: [1]\n", r"train\.lora_targets must be a list of names"),
        ("train:\n  init_from: r\n  quantize: int4\n", r"train\.quantize='int4' is invalid: use one of none, int8"),
        ("train:\n  init_from: r\n  quantize: int8\n", r"train\.quantize='int8' is invalid: an int8 backbone is "
                                                         r"frozen.*set train\.lora_rank"),
        ("model:\n  dropout: 0.1\ntrain:\n  gradient_checkpointing: true\n",
         r"model\.dropout=0\.1 is invalid: train\.gradient_checkpointing recomputes each block"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("train: [1, 2\n", r"not valid YAML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=expected) as info:
        load_config(path)
    assert "\n" not in str(info.value)
    if "YAML" not in expected and "top level" not in expected:
        assert path in str(info.value)


def test_missing_file():
    with pytest.raises(UserError, match="nope.yaml does not exist"):
        load_config("nope.yaml")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.stepz=3", r"override 'train\.stepz=3': unknown key 'train\.stepz'; did you mean 'train\.steps'"),
        ("train.steps", r"must look like section\.key=value"),
        ("steps=3", r"must be section\.key"),
        ("train.dropout=0.1", r"did you mean"),
    ],
)
def test_bad_override(override, expected):
    with pytest.raises(UserError, match=expected):
        load_config(None, [override])


def test_lora_targets_are_a_list_or_comma_separated_names_and_saved_as_text(tmp_path):
    listed = load_config(write(tmp_path, "train:\n  init_from: r\n  lora_rank: 8\n  lora_targets: [query, mlp]\n"))
    assert listed.train.lora_targets == "query,mlp" and type(listed.train.lora_targets) is str
    assert load_config(None, ["train.lora_targets=query,mlp"]).train == load_config(None, [
        "train.lora_targets=[query, mlp]"]).train


def test_yaml_values_in_overrides_are_typed():
    config = load_config(None, ["data.clean=false", "train.jit_compile=false", "data.val_path=null"])
    assert config.data.clean is False and config.train.jit_compile is False and config.data.val_path is None


@pytest.mark.parametrize(
    "override, expected",
    [
        ("distribute.strategy=horovod", r"distribute\.strategy='horovod' is invalid: use one of auto, one_device"),
        ("distribute.cpu_replicas=0", r"distribute\.cpu_replicas=0 is invalid"),
        ("train.grad_accum_steps=0", r"train\.grad_accum_steps=0 is invalid"),
    ],
)
def test_bad_distribution_settings(override, expected):
    with pytest.raises(UserError, match=expected):
        load_config(None, [override])


def test_precision_defaults_to_auto():
    assert config_lib.load_config(None).train.precision == "auto"


def test_written_keys_are_the_file_s_and_the_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  num_layers: 2\ntrain:\n  steps: 5\n")
    keys = config_lib.written_keys(str(path), ["data.tokenizer=char", "train.steps=7"])
    assert keys == {"model.num_layers", "train.steps", "data.tokenizer"}
    assert config_lib.written_keys(None, []) == frozenset()


def test_qwen2_and_llama3_keys_load_typed_and_round_trip(tmp_path):
    path = write(tmp_path, f"model:\n  position: rope\n  use_bias: false\n  qkv_bias: true\n  pooler: true\n"
                           f"  rope_scaling: {LLAMA3}\n")
    config = load_config(path)
    assert (config.model.qkv_bias, config.model.pooler) == (True, True)
    assert config.model.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert [type(v) for v in config.model.rope_scaling.values()] == [str, float, float, float, int]
    save_config(config, str(tmp_path / "config.yaml"))
    assert load_config(str(tmp_path / "config.yaml")) == config


def test_a_run_config_written_before_the_keys_existed_loads_with_their_defaults(tmp_path):
    """A config.yaml without `model.qkv_bias`, `rope_scaling` and `pooler` builds the model it built."""
    save_config(load_config(None, ["model.position=rope"]), str(tmp_path / "config.yaml"))
    tree = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for key in ("qkv_bias", "rope_scaling", "pooler"):
        del tree["model"][key]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tree))
    model = load_config(str(tmp_path / "config.yaml")).model
    assert (model.qkv_bias, model.rope_scaling, model.pooler) == (None, None, False)


def test_a_bad_rope_scaling_override_is_reported_where_it_was_written(tmp_path):
    path = write(tmp_path, "model:\n  position: rope\n")
    override = f"model.rope_scaling={LLAMA3.replace('factor: 8', 'factor: -1')}"
    with pytest.raises(UserError, match=r"^override 'model\.rope_scaling=.*': model\.rope_scaling\.factor=-1\.0"):
        load_config(path, [override])


def test_the_model_keys_reach_the_backbone():
    from tfllm.tasks import build_backbone

    config = load_config(None, ["model.position=rope", "model.use_bias=false", "model.qkv_bias=true",
                                "model.pooler=true", f"model.rope_scaling={LLAMA3}"])
    backbone = build_backbone(config.model, vocabulary_size=32, max_seq_len=16, causal=False)
    assert (backbone.use_bias, backbone.qkv_bias, backbone.pooler) == (False, True, True)
    assert backbone.llama3_scaling == (8.0, 1.0, 4.0, 8192)
    default = build_backbone(load_config().model, vocabulary_size=32, max_seq_len=16, causal=True)
    assert (default.qkv_bias, default.llama3_scaling, default.pooler_dense) == (True, None, None)

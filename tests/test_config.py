import dataclasses

import pytest

from tfllm import config as config_lib
from tfllm.config import load_config, save_config
from tfllm.errors import UserError


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
        ("train:\n  batch_size: 0\n", r"train\.batch_size=0 is invalid"),
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

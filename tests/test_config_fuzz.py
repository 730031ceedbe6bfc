"""Property-based fuzzing of `load_config`: any file or override either loads or is a one-line `UserError`.

Anything else escaping `load_config` (a `ValueError` out of PyYAML, a `TypeError` from an integer key)
would reach the command line as a traceback instead of exit code 2.
"""

import dataclasses
import math
import os
import tempfile
import typing

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfllm import config as config_lib
from tfllm.config import load_config, save_config
from tfllm.errors import UserError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SECTION_NAMES = list(config_lib.SECTIONS)
FIELD_NAMES = sorted({f.name for cls in config_lib.SECTIONS.values() for f in dataclasses.fields(cls)}
                     | {name for schema in config_lib.MAPPING_KEYS.values() for name in schema})
DOTTED_NAMES = [name for name, _, _ in config_lib.field_docs()]

# Real names most of the time, so that fuzzed trees get past the unknown-key check into type checks.
keys = st.sampled_from(SECTION_NAMES + FIELD_NAMES) | st.text(max_size=8) | st.integers() | st.none()
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    # Past the float range: `float()` of it overflows.
    | st.integers(min_value=2**1024, max_value=2**1100)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["auto", "rope", "bpe", "1e-3", "2001-02-30", "0x1f", ".inf", "~", ""])
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)
# Lines of YAML syntax that random text rarely hits: anchors, aliases, merges, tags, flow and block collections.
yaml_lines = st.lists(
    st.sampled_from([
        "train:", "model:", "data:", "distribute:", "  steps: 3", "  learning_rate: 1e-3", "  num_heads: 3",
        "  seq_len: 99999999999999999999999999999999999", "  path: &a x", "  val_path: *a", "  <<: *a",
        "  jit_compile: !!str yes", "  steps: !!int abc", "  seed: 2001-02-30", "  dropout: !!float x",
        "  - 1", "- a", "? [a, b]", ": 1", "  {a: 1}", "[", "]", "{", "'", '"\\x"', "&b [*b]", "!!binary =",
        "  tokenizer: bpe", "%YAML 1.1", "---", "...", "\t", "", "#", "*b",
    ]),
    max_size=8,
).map("\n".join)


def assert_one_line_user_error(error, must_name):
    """The CLI prints a `UserError` as one line on stderr, so it must be one, and say where."""
    assert isinstance(error, UserError), f"{type(error).__name__}: {error}"
    message = str(error)
    assert message.strip()
    # splitlines() also breaks at \r, \x0b, \x1c, \x85, \u2028...: none of them may leak from a key or value.
    assert message.splitlines() == [message]
    assert any(name in message for name in must_name), message


def load_or_user_error(content, overrides=()):
    """Writes `content` (str or bytes) to a file and loads it: the `Config`, or None after a `UserError`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.yaml")
        with open(path, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
        try:
            return load_config(path, overrides)
        except Exception as error:  # noqa: BLE001 - the property is about which exceptions escape.
            assert_one_line_user_error(error, [path, "override"])
            return None


@FUZZ
@given(st.text())
def test_arbitrary_text(text):
    load_or_user_error(text)


@FUZZ
@given(st.binary())
def test_arbitrary_bytes_including_invalid_utf8(content):
    load_or_user_error(content)


@FUZZ
@given(yaml_lines)
def test_yaml_syntax_fragments(text):
    load_or_user_error(text)


@FUZZ
@given(st.dictionaries(keys, trees, max_size=4) | trees)
def test_random_yaml_trees(tree):
    config = load_or_user_error(yaml.safe_dump(tree, allow_unicode=True, sort_keys=False))
    if config is not None:
        # Only an empty file or a mapping of known sections can load.
        assert tree is None or (isinstance(tree, dict) and set(tree) <= set(SECTION_NAMES)), tree


overrides = st.lists(
    st.text(max_size=30)
    | st.builds(
        "{}={}".format,
        st.sampled_from(DOTTED_NAMES) | st.text(max_size=12),
        st.text(max_size=12) | st.sampled_from(["[1", "{a: [", "!!int x", "2001-02-30", "1" * 400, "*a", "null"]),
    ),
    max_size=3,
)


@FUZZ
@given(overrides, st.sampled_from(["", "train:\n  steps: 5\n", "train: 3\n"]))
def test_arbitrary_overrides(texts, content):
    load_or_user_error(content, texts)


# Values valid by construction, per key, so that most drawn configs load and the round trip is exercised.
ANY_TEXT = st.text(max_size=20)
NON_NEGATIVE = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
UNIT = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
CHOICES = {
    "data.tokenizer": config_lib.TOKENIZERS, "model.position": config_lib.POSITIONS,
    "train.precision": config_lib.PRECISIONS, "distribute.strategy": config_lib.STRATEGIES,
    "model.task": config_lib.TASKS, "train.class_weights": config_lib.CLASS_WEIGHTS,
    "train.jit_compile": (True, False, "auto"), "model.norm": config_lib.NORMS,
    "model.norm_position": config_lib.NORM_POSITIONS, "model.mlp": config_lib.MLPS,
    "train.quantize": config_lib.QUANTIZATIONS, "data.blocklist_action": config_lib.BLOCKLIST_ACTIONS,
}
POSITIVE = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
FLOATS = {
    "data.val_fraction": UNIT, "model.dropout": UNIT, "train.beta1": UNIT, "train.beta2": UNIT,
    "train.label_smoothing": UNIT, "train.lora_dropout": UNIT, "train.lora_alpha": POSITIVE,
    "data.mask_rate": st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True),
    "train.learning_rate": POSITIVE, "model.norm_epsilon": POSITIVE, "model.rope_theta": POSITIVE,
    "data.near_duplicate_threshold": st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
    **{f"data.quality_{key}": UNIT for key in ("min_punctuated_lines", "max_duplicate_lines", "max_top_2gram",
                                               "max_top_3gram", "max_top_4gram")},
}
BOUNDED = st.floats(min_value=1e-3, max_value=1e3)
LLAMA3_SCALING = st.builds(
    lambda factor, low, gap, original: {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                                        "high_freq_factor": low + gap, "original_max_position_embeddings": original},
    BOUNDED, BOUNDED, BOUNDED, st.integers(1, 2**20),
)
INT_MINIMUM = {"data.vocab_size": 8, "data.min_chars": 0, "train.warmup_steps": 0, "train.checkpoint_every": 0,
               "train.early_stopping_patience": 0, "train.seed": None, "train.samples": None,
               "train.sample_tokens": None, "model.num_encoder_layers": 0, "model.num_decoder_layers": 0,
               "model.source_len": 0, "train.lora_rank": 0,
               "data.quality_min_words": 0, "data.removed_samples": 0, "data.near_duplicate_num_perm": 2}
LORA_TARGETS = st.lists(st.sampled_from(config_lib.LORA_TARGETS), min_size=1, unique=True).map(",".join)


def valid_value(dotted, annotation):
    if dotted in CHOICES:
        return st.sampled_from(CHOICES[dotted])
    if annotation is config_lib.NameList:
        return LORA_TARGETS
    if annotation is bool:
        return st.booleans()
    if annotation is float:
        return FLOATS.get(dotted, NON_NEGATIVE)
    if annotation is int:
        return st.integers(min_value=INT_MINIMUM.get(dotted, 1), max_value=2**40)
    if annotation == typing.Optional[bool]:
        return st.none() | st.booleans()
    if annotation == typing.Optional[dict]:
        return st.none() | LLAMA3_SCALING
    return ANY_TEXT | st.none() if annotation == typing.Optional[str] else ANY_TEXT


@st.composite
def valid_trees(draw):
    """A tree of a random subset of keys; cross-key rules (heads divide width...) hold by construction."""
    tree = {}
    for section, cls in config_lib.SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if draw(st.booleans()):
                tree.setdefault(section, {})[f.name] = draw(valid_value(f"{section}.{f.name}", hints[f.name]))
    model, train, data = tree.get("model", {}), tree.get("train", {}), tree.get("data", {})
    if "quality_max_mean_word_length" in data or "quality_min_mean_word_length" in data:
        minimum = data.get("quality_min_mean_word_length", config_lib.DataConfig.quality_min_mean_word_length)
        # A finite sum: the largest float plus any gap rounds to infinity, which no setting takes.
        data["quality_max_mean_word_length"] = minimum + draw(
            NON_NEGATIVE.filter(lambda gap: math.isfinite(minimum + gap)))
    if model.get("rope_scaling") is not None:
        model["position"] = "rope"
    num_heads = model.get("num_heads", config_lib.ModelConfig.num_heads)
    model["hidden_dim"] = num_heads * draw(st.integers(1, 64))
    model["num_kv_heads"] = draw(st.just(0) | st.sampled_from([n for n in range(1, 65) if num_heads % n == 0]))
    seq_len = model.get("seq_len", config_lib.ModelConfig.seq_len)
    model["max_seq_len"] = draw(st.just(0) | st.integers(seq_len, 2 * seq_len))
    learning_rate = train.get("learning_rate", config_lib.TrainConfig.learning_rate)
    train["min_learning_rate"] = draw(st.floats(min_value=0.0, max_value=learning_rate))
    # Adapters need a pretrained run, int8 weights adapters, recomputation no dropout.
    if train.get("quantize") == "int8" and not train.get("lora_rank"):
        train["lora_rank"] = draw(st.integers(1, 64))
    if train.get("lora_rank"):
        train["init_from"] = "runs/base"
    if train.get("gradient_checkpointing"):
        model["dropout"] = train["lora_dropout"] = 0.0
    tree["model"], tree["train"] = model, train
    return tree


@FUZZ
@given(valid_trees(), st.booleans())
def test_valid_trees_load_and_round_trip(tree, as_overrides):
    if as_overrides:
        # The same values through the command line: one YAML scalar per `section.key=value`.
        texts = [f"{s}.{k}={yaml.safe_dump(v)}" for s, values in tree.items() for k, v in values.items()]
        config = load_or_user_error("", texts)
    else:
        # Escaped, not allow_unicode: a raw U+0085 or U+2028 in a quoted YAML scalar is a line break, folded to " ".
        config = load_or_user_error(yaml.safe_dump(tree))
    assert config is not None
    for section, values in tree.items():
        for key, value in values.items():
            loaded = getattr(getattr(config, section), key)
            assert loaded == value and type(loaded) is type(value), (section, key, loaded, value)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        save_config(config, path)
        again = load_config(path)
    assert again == config

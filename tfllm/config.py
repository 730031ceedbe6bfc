"""Run configuration: YAML -> typed, frozen dataclasses, validated once at load.

A YAML file only overrides the defaults declared here, so a config file holds what makes a run
different and nothing else. Every field carries a one-line doc (`doc=`) that `tfllm train --help`
prints. Unknown keys, wrong types and impossible values are `UserError`s naming the key, the file
and, for a typo, the closest valid key.
"""

import dataclasses
import difflib
import math
import typing

import yaml

from tfllm.errors import UserError
from tfllm.files import write_atomically

POSITIONS = ("learned", "rope")
NORMS = ("layer", "rms")
NORM_POSITIONS = ("pre", "post")
MLPS = ("gelu_tanh", "gelu", "swiglu")
TOKENIZERS = ("char", "wordpiece", "bpe", "sentencepiece", "gpt2_bpe", "llama3_bpe", "qwen2_bpe", "llama_sentencepiece",
              "bert_wordpiece")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
TASKS = ("causal_lm", "masked_lm", "classify", "sft", "seq2seq")
CLASS_WEIGHTS = ("none", "balanced")
BLOCKLIST_ACTIONS = ("drop", "mask")
# `tfllm.lora.TARGETS` and `QUANTIZATIONS`, repeated here: a config is read without TensorFlow.
LORA_TARGETS = ("query", "key", "value", "attention_output", "mlp", "embedding")
QUANTIZATIONS = ("none", "int8")
ROPE_SCALINGS = ("llama3",)
# `model.rope_scaling`'s keys, as Hugging Face's config.json writes them; after `rope_type`, the
# order of `GPTBackbone`'s `llama3_scaling` tuple.
ROPE_SCALING_KEYS = {"rope_type": str, "factor": float, "low_freq_factor": float, "high_freq_factor": float,
                     "original_max_position_embeddings": int}
LLAMA3_SCALING_KEYS = tuple(ROPE_SCALING_KEYS)[1:]
# The keys of every mapping-valued key.
MAPPING_KEYS = {"model.rope_scaling": ROPE_SCALING_KEYS}


class NameList(str):
    """The type of a key whose value is a comma-separated list of names; YAML may write it as a list."""


def names(value):
    """The names of a `NameList` value, in order."""
    return [name.strip() for name in value.split(",") if name.strip()]


def llama3_scaling(rope_scaling):
    """`GPTBackbone`'s `llama3_scaling` tuple of a rope scaling mapping (`model.rope_scaling`, or a
    Hugging Face config.json's `rope_scaling`); None for None."""
    return None if rope_scaling is None else tuple(rope_scaling[key] for key in LLAMA3_SCALING_KEYS)


def rope_scaling(llama3_scaling):
    """The rope scaling mapping, as `model.rope_scaling` and Hugging Face's config.json write it, of
    `GPTBackbone`'s `llama3_scaling` tuple; None for None."""
    if llama3_scaling is None:
        return None
    scaling = {"rope_type": "llama3", **dict(zip(LLAMA3_SCALING_KEYS, llama3_scaling))}
    scaling["original_max_position_embeddings"] = int(scaling["original_max_position_embeddings"])
    return scaling


def _field(default, doc):
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class DataConfig:
    path: str = _field("builtin:python-docs", "Training text: a file, directory, glob or builtin:NAME.")
    val_path: typing.Optional[str] = _field(None, "Explicit validation text; when set, no split is made.")
    val_fraction: float = _field(0.05, "Fraction of documents held out for validation.")
    blank_line_documents: bool = _field(False, "Split .txt files into documents at blank lines.")
    clean: bool = _field(True, "Master switch for every cleaning step below.")
    normalize_unicode: bool = _field(True, "Cleaning: Unicode NFC normalization.")
    drop_control_chars: bool = _field(True, "Cleaning: drop control characters other than newline and tab.")
    normalize_whitespace: bool = _field(True, "Cleaning: LF line ends, no trailing spaces, at most 2 blank lines.")
    deduplicate: bool = _field(True, "Cleaning: drop exact duplicate documents.")
    min_chars: int = _field(32, "Cleaning: drop documents shorter than this many characters.")
    redact_personal_data: bool = _field(True, "Cleaning: replace e-mail addresses, phone numbers, IP addresses, "
                                              "payment cards and secrets by <EMAIL>-style placeholders.")
    blocklist: typing.Optional[str] = _field(None, "Cleaning: file of words or phrases, one per line (# comments), "
                                                   "matched whole-word and case-insensitively; null for none.")
    blocklist_action: str = _field("drop", "Cleaning: drop a document with a blocklist match, or mask each match "
                                           "as <BLOCKED>.")
    quality_filter: bool = _field(False, "Cleaning: apply the Gopher/C4 quality_* rules below; off because they "
                                         "are tuned for web prose and drop code, which the built-in corpora hold.")
    quality_min_words: int = _field(50, "Quality: drop documents with fewer words.")
    quality_min_mean_word_length: float = _field(3.0, "Quality: drop documents whose mean word length is shorter.")
    quality_max_mean_word_length: float = _field(10.0, "Quality: drop documents whose mean word length is longer.")
    quality_max_symbol_ratio: float = _field(0.1, "Quality: drop documents with more '#' and ellipses per word.")
    quality_min_punctuated_lines: float = _field(0.12, "Quality: drop documents with a smaller share of lines "
                                                       "ending in . ! ? or a quote.")
    quality_max_duplicate_lines: float = _field(0.3, "Quality: drop documents with a larger share of repeated lines.")
    quality_max_top_2gram: float = _field(0.20, "Quality: drop documents whose most common word 2-gram covers a "
                                                "larger share of the characters.")
    quality_max_top_3gram: float = _field(0.18, "Quality: the same for the most common 3-gram.")
    quality_max_top_4gram: float = _field(0.16, "Quality: the same for the most common 4-gram.")
    near_duplicates: bool = _field(False, "Cleaning: drop documents whose word n-grams mostly repeat a kept one "
                                          "(MinHash + LSH); off as it doubles the time to prepare "
                                          "builtin:python-docs, which has no near-duplicates.")
    near_duplicate_threshold: float = _field(0.8, "Near-duplicates: estimated Jaccard similarity that drops a "
                                                  "document.")
    near_duplicate_ngram: int = _field(5, "Near-duplicates: words per shingle.")
    near_duplicate_num_perm: int = _field(128, "Near-duplicates: MinHash permutations (more is more exact, slower).")
    removed_samples: int = _field(20, "Cleaning: documents per reason (and quality rule) written to "
                                      "corpus/removed/<reason>.jsonl for review.")
    tokenizer: str = _field("bpe", "Tokenizer kind: char, wordpiece, bpe (byte-level) or sentencepiece; gpt2_bpe, "
                                   "llama3_bpe, qwen2_bpe, llama_sentencepiece and bert_wordpiece come with an "
                                   "imported checkpoint (tfllm import).")
    vocab_size: int = _field(2048, "Vocabulary size, including the 4 reserved ids (pad, eos, unk, mask).")
    shuffle_buffer: int = _field(2048, "Training blocks held in the shuffle buffer.")
    pack: bool = _field(False, "Pack documents per row with segment ids: no attention across documents.")
    mask_rate: float = _field(0.15, "masked_lm: fraction of tokens predicted (80% [MASK], 10% random, 10% kept).")
    whole_word_masking: bool = _field(False, "masked_lm: mask every piece of a chosen word (wordpiece only).")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    task: str = _field("causal_lm", "causal_lm, masked_lm (bidirectional encoder), classify, sft or seq2seq "
                                    "(encoder-decoder).")
    num_layers: int = _field(4, "Transformer blocks.")
    num_encoder_layers: int = _field(0, "seq2seq: encoder blocks; 0 means num_layers.")
    num_decoder_layers: int = _field(0, "seq2seq: decoder blocks; 0 means num_layers.")
    num_heads: int = _field(4, "Attention heads; must divide hidden_dim.")
    hidden_dim: int = _field(128, "Width of the residual stream.")
    intermediate_dim: int = _field(512, "Width of the MLP inside each block.")
    seq_len: int = _field(128, "Context length in tokens (training block length).")
    max_seq_len: int = _field(0, "Longest context the model accepts; 0 means seq_len.")
    source_len: int = _field(0, "seq2seq: longest source in tokens (longer ones are cut); 0 means max_seq_len.")
    dropout: float = _field(0.0, "Dropout rate on attention and residual branches.")
    position: str = _field("learned", "Position encoding: learned or rope.")
    rope_theta: float = _field(10000.0, "Rotary positions' maximum wavelength (Llama 3: 500000).")
    rope_scaling: typing.Optional[dict] = _field(
        None, "Rotary frequency scaling: null, or Llama 3.1's {rope_type: llama3, factor, low_freq_factor, "
              "high_freq_factor, original_max_position_embeddings}, as its config.json writes it.")
    norm: str = _field("layer", "Normalization: layer (LayerNorm, GPT-2, BERT) or rms (RMSNorm, Llama).")
    norm_epsilon: float = _field(1e-5, "Epsilon of every norm.")
    norm_position: str = _field("pre", "pre: norm before each branch, and at the end (GPT-2, Llama); post: after (BERT).")
    mlp: str = _field("gelu_tanh", "MLP: gelu_tanh (GPT-2), gelu (exact, BERT) or swiglu (Llama).")
    num_kv_heads: int = _field(0, "Key-value heads (grouped-query attention); must divide num_heads; 0 means num_heads.")
    use_bias: bool = _field(True, "Biases in attention and MLP projections (Llama has none).")
    qkv_bias: typing.Optional[bool] = _field(None, "Biases in the query/key/value projections alone (Qwen2: true, "
                                                   "with use_bias false); null follows use_bias.")
    tie_embeddings: bool = _field(True, "The output head is the token embedding matrix.")
    pooler: bool = _field(False, "BERT's pooler, tanh(Dense) of the token classify reads; imported with a BERT "
                                 "checkpoint that has one.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = _field(16, "Global batch size in sequences per optimizer step.")
    steps: int = _field(600, "Optimizer steps.")
    learning_rate: float = _field(3e-3, "Peak learning rate after warmup.")
    min_learning_rate: float = _field(3e-4, "Learning rate at the end of the cosine decay.")
    warmup_steps: int = _field(50, "Linear warmup steps.")
    weight_decay: float = _field(0.1, "Decoupled (AdamW) weight decay.")
    beta1: float = _field(0.9, "AdamW beta_1.")
    beta2: float = _field(0.99, "AdamW beta_2.")
    clip_norm: float = _field(1.0, "Global gradient-norm clipping; 0 turns it off.")
    eval_every: int = _field(100, "Validate (and checkpoint) every this many steps.")
    eval_batches: int = _field(20, "Validation batches per evaluation.")
    log_every: int = _field(10, "Write metrics.jsonl and TensorBoard scalars every this many steps.")
    keep_checkpoints: int = _field(3, "How many recent checkpoints to keep (the best is kept apart).")
    checkpoint_every: int = _field(0, "Write a resumable checkpoint every this many steps; 0 means at each eval.")
    deterministic: bool = _field(False, "TensorFlow op determinism: bit-identical reruns, somewhat slower.")
    precision: str = _field("auto", "float32, mixed_bfloat16, mixed_float16 or auto.")
    jit_compile: typing.Union[bool, str] = _field("auto", "XLA compilation: auto, true or false.")
    steps_per_execution: int = _field(1, "Training steps run per call into the compiled graph.")
    grad_accum_steps: int = _field(1, "Micro-batches per optimizer step; batch_size stays the global batch.")
    peak_flops: float = _field(0.0, "Peak FLOP/s of one device for MFU; 0 looks it up or measures it.")
    seed: int = _field(0, "Seed for the split, initialization, shuffling and dropout.")
    init_from: typing.Optional[str] = _field(None, "Start from this pretrained run dir: its tokenizer and backbone.")
    class_weights: str = _field("none", "classify: none, or balanced (inverse class frequency).")
    label_smoothing: float = _field(0.0, "Share of each target's probability spread over the whole vocabulary.")
    lora_rank: int = _field(0, "Low-rank adapters (LoRA) of this rank on the pretrained backbone (train.init_from), "
                               "which stays frozen; 0 trains every weight.")
    lora_alpha: float = _field(16.0, "LoRA: adapters' output is scaled by lora_alpha / lora_rank.")
    lora_targets: NameList = _field("query,value", "LoRA: the projections adapted, among "
                                                   "query, key, value, attention_output, mlp and embedding.")
    lora_dropout: float = _field(0.0, "LoRA: dropout on the adapters' inputs.")
    gradient_checkpointing: bool = _field(False, "Compute each block's activations again in the backward pass "
                                                 "instead of keeping them: less memory, about 1/3 more compute; "
                                                 "needs model.dropout and train.lora_dropout 0.")
    quantize: str = _field("none", "none, or int8: the frozen backbone held in int8, one scale per channel "
                                   "(needs lora_rank).")
    early_stopping_patience: int = _field(0, "Stop after this many evaluations without improvement; 0 is off.")
    monitor: str = _field("auto", "Validation metric for best checkpoint and early stopping; auto picks per task.")
    samples: int = _field(3, "Samples printed at the end of training.")
    sample_tokens: int = _field(64, "Tokens generated per sample at the end of training.")
    encrypt_key_file: typing.Optional[str] = _field(None, "Key file (64 hex digits) that encrypts the checkpoints "
                                                          "at rest with AES-256-GCM; reading them needs it too.")


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
    strategy: str = _field("auto", "auto, one_device, mirrored, multi_worker (TF_CONFIG) or tpu.")
    cpu_replicas: int = _field(1, "Without GPUs, split the CPU into this many devices and mirror over them.")
    tpu: str = _field("", "TPUClusterResolver address for strategy tpu ('' or 'local' on a TPU VM).")


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)

    @property
    def max_seq_len(self):
        return self.model.max_seq_len or self.model.seq_len

    @property
    def source_len(self):
        """seq2seq: the longest source, the encoder's context."""
        return self.model.source_len or self.max_seq_len

    @property
    def num_encoder_layers(self):
        return self.model.num_encoder_layers or self.model.num_layers

    @property
    def num_decoder_layers(self):
        return self.model.num_decoder_layers or self.model.num_layers

    def to_dict(self):
        return dataclasses.asdict(self)

    def flat(self):
        """`{"section.key": value}` of every key."""
        return {f"{section}.{key}": value for section, values in self.to_dict().items() for key, value in values.items()}

    def replace(self, values):
        """A copy with the dotted keys of `values` (`{"model.seq_len": 64}`) replaced, unchecked."""
        sections = {}
        for key, value in values.items():
            section, name = key.split(".")
            sections.setdefault(section, {})[name] = value
        return dataclasses.replace(self, **{
            section: dataclasses.replace(getattr(self, section), **changes) for section, changes in sections.items()
        })


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def field_docs():
    """Yield (dotted key, default, doc) for every config key, for `--help`."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield f"{section}.{f.name}", f.default, f.metadata["doc"]


def _closest(name, valid, prefix=""):
    # YAML keys can be numbers, dates or null as well as strings.
    match = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    if match:
        return f"; did you mean '{prefix}{match[0]}'?"
    return f"; valid keys: {', '.join(prefix + v for v in valid)}"


def _suggest_key(section, key):
    for other, cls in SECTIONS.items():
        if other != section and key in {f.name for f in dataclasses.fields(cls)}:
            return f"; did you mean '{other}.{key}'?"
    return _closest(key, [f.name for f in dataclasses.fields(SECTIONS[section])], section + ".")


def _coerce(value, annotation, key, source):
    """Check `value` against a field's type; ints are accepted where floats are expected."""
    expected = {
        bool: (bool,), int: (int,), float: (int, float), str: (str,),
        typing.Optional[str]: (str, type(None)), typing.Union[bool, str]: (bool, str),
        typing.Optional[bool]: (bool, type(None)), typing.Optional[dict]: (dict, type(None)),
        NameList: (str, list),
    }[annotation]
    if annotation is NameList and isinstance(value, list):
        if not all(isinstance(name, str) for name in value):
            raise UserError(f"{source}: {key} must be a list of names, got {value!r}; fix the value.")
        value = ",".join(value)
    if annotation is float and isinstance(value, str):
        # YAML 1.1 reads `1e-3` (no dot) as a string; accept what any reader means by it.
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) and bool not in expected:
        ok = False
    else:
        ok = isinstance(value, expected)
    if not ok:
        names = " or ".join(t.__name__ for t in expected).replace("NoneType", "null").replace("dict", "a mapping")
        raise UserError(
            f"{source}: {key} must be {names}, got {value!r} ({type(value).__name__}); fix the value."
        )
    if annotation is float:
        try:
            value = float(value)
        except OverflowError:
            raise UserError(f"{source}: {key}={value!r} is too large for a float; fix the value.") from None
        # YAML's .inf and .nan (and 1e400) are floats, but no setting means them: an infinite
        # learning rate trains straight into NaN.
        if not math.isfinite(value):
            raise UserError(f"{source}: {key}={value!r} is not a finite number; fix the value.")
    if isinstance(value, dict):
        value = _coerce_mapping(value, MAPPING_KEYS[key], key, source)
    return value


def _coerce_mapping(value, schema, key, source):
    """A mapping value with exactly the keys of `schema` (name -> type), each coerced, in its order."""
    for name in value:
        if name not in schema:
            raise UserError(f"{source}: unknown key {name!r} in {key}{_closest(name, list(schema), key + '.')}")
    missing = [name for name in schema if name not in value]
    if missing:
        raise UserError(f"{source}: {key} lacks {', '.join(missing)}; give all of {', '.join(schema)}")
    return {name: _coerce(value[name], annotation, f"{key}.{name}", source) for name, annotation in schema.items()}


def _safe_load(stream, source, what_to_do):
    """`yaml.safe_load`, turning every way the text can be wrong into a one-line `UserError`."""
    try:
        return yaml.safe_load(stream)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        reason = f" (line {line + 1})" if line is not None else ""
    except UnicodeDecodeError:
        reason = " (not UTF-8)"
    except ValueError:
        # Scalars that match a type but do not convert: 2001-02-30, !!int abc, a 5000-digit integer.
        reason = " (a value that cannot be converted)"
    except RecursionError:
        reason = " (nested too deeply)"
    raise UserError(f"{source}{reason}: not valid YAML; {what_to_do}")


def _parse_override(text):
    if "=" not in text:
        raise UserError(f"override {text!r} must look like section.key=value (e.g. train.steps=200)")
    key, raw = text.split("=", 1)
    if not raw.strip():
        return key.strip(), ""
    return key.strip(), _safe_load(raw, f"override {text!r}", "fix or quote the value")


def _set_dotted(tree, key, value, source):
    parts = key.split(".")
    if len(parts) != 2:
        raise UserError(f"{source}: {key!r} must be section.key with section one of {', '.join(SECTIONS)}")
    tree.setdefault(parts[0], {})
    if not isinstance(tree[parts[0]], dict):
        raise UserError(f"{source}: section {parts[0]!r} must be a mapping")
    tree[parts[0]][parts[1]] = value


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            tree = _safe_load(f, path, "fix the syntax")
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist; pass --config with an existing YAML file")
    except OSError as e:
        raise UserError(f"config file {path} cannot be read ({e.strerror}); pass --config with a YAML file")
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections ({', '.join(SECTIONS)})")
    return tree


def _where(source, key):
    """Where the value of `key` (or of the mapping-valued key it is inside) came from: `source`
    itself, or its entry for `key` when `source` maps dotted keys to origins (None: everything else)."""
    if not isinstance(source, dict):
        return source
    if key is not None:
        key = ".".join(key.split(".")[:2])
    return source.get(key, source[None])


def from_dict(tree, source="config", check=True):
    """Validate a nested dict and build a `Config`.

    `source` names the origin in error messages: a file name, or a dict of dotted key to the
    override that set it, with the key None for every other key.
    """
    sections = {}
    for name, values in tree.items():
        if name not in SECTIONS:
            raise UserError(f"{_where(source, None)}: unknown section {name!r}{_closest(name, list(SECTIONS))}")
        if not isinstance(values, dict):
            raise UserError(f"{_where(source, None)}: section {name!r} must be a mapping of keys to values")
        cls = SECTIONS[name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in fields:
                dotted = f"{name}.{key}"
                raise UserError(f"{_where(source, dotted)}: unknown key {dotted!r}{_suggest_key(name, key)}")
            kwargs[key] = _coerce(value, hints[key], f"{name}.{key}", _where(source, f"{name}.{key}"))
        sections[name] = cls(**kwargs)
    config = Config(**sections)
    if check:
        validate(config, source)
    return config


def written_keys(path=None, overrides=()):
    """The dotted keys that the YAML file at `path` or an override sets; every other key of a
    config loaded from them keeps its default."""
    tree = _read_yaml(path) if path else {}
    keys = {f"{section}.{key}" for section, values in tree.items() if isinstance(values, dict) for key in values}
    return frozenset(keys | {_parse_override(text)[0] for text in overrides})


def load_config(path=None, overrides=()):
    """Load a YAML file (or the defaults) and apply `section.key=value` overrides."""
    tree = _read_yaml(path) if path else {}
    # An impossible value is reported where it was written: the override, else the file.
    sources = {None: path or "defaults"}
    for text in overrides:
        key, value = _parse_override(text)
        source = f"override {text!r}"
        _set_dotted(tree, key, value, source)
        from_dict({key.split(".")[0]: {key.split(".")[1]: value}}, source, check=False)
        sources[key] = source
    return from_dict(tree, sources)


def _require(condition, source, key, value, what):
    if not condition:
        raise UserError(f"{_where(source, key)}: {key}={value!r} is invalid: {what}")


def _validate_cleaning(d, source):
    """The cleaning keys of `data`; the blocklist file itself is read when a corpus is prepared."""
    _require(d.blocklist_action in BLOCKLIST_ACTIONS, source, "data.blocklist_action", d.blocklist_action,
             "use " + " or ".join(BLOCKLIST_ACTIONS))
    for key in ("quality_min_words", "quality_min_mean_word_length", "quality_max_symbol_ratio", "removed_samples"):
        _require(getattr(d, key) >= 0, source, f"data.{key}", getattr(d, key), "use 0 or more")
    _require(d.quality_max_mean_word_length >= d.quality_min_mean_word_length, source,
             "data.quality_max_mean_word_length", d.quality_max_mean_word_length,
             f"use at least data.quality_min_mean_word_length={d.quality_min_mean_word_length}")
    for key in ("quality_min_punctuated_lines", "quality_max_duplicate_lines", "quality_max_top_2gram",
                "quality_max_top_3gram", "quality_max_top_4gram"):
        _require(0.0 <= getattr(d, key) <= 1.0, source, f"data.{key}", getattr(d, key), "use a fraction in [0, 1]")
    _require(0.0 < d.near_duplicate_threshold <= 1.0, source, "data.near_duplicate_threshold",
             d.near_duplicate_threshold, "use a Jaccard similarity in (0, 1]")
    _require(d.near_duplicate_ngram >= 1, source, "data.near_duplicate_ngram", d.near_duplicate_ngram, "use 1 or more")
    _require(d.near_duplicate_num_perm >= 2, source, "data.near_duplicate_num_perm", d.near_duplicate_num_perm,
             "use 2 or more (128 is usual)")


def validate(config, source):
    """`UserError` for the first impossible value of `config`, naming its `source` (see `from_dict`)."""
    d, m, t = config.data, config.model, config.train
    _require(d.tokenizer in TOKENIZERS, source, "data.tokenizer", d.tokenizer, f"use one of {', '.join(TOKENIZERS)}")
    _require(d.vocab_size >= 8, source, "data.vocab_size", d.vocab_size, "use at least 8")
    _require(0.0 <= d.val_fraction < 1.0, source, "data.val_fraction", d.val_fraction, "use a value in [0, 1)")
    _require(d.min_chars >= 0, source, "data.min_chars", d.min_chars, "use 0 or more")
    _require(d.shuffle_buffer >= 1, source, "data.shuffle_buffer", d.shuffle_buffer, "use 1 or more")
    _validate_cleaning(d, source)
    for key in ("num_layers", "num_heads", "hidden_dim", "intermediate_dim", "seq_len"):
        value = getattr(m, key)
        _require(value >= 1, source, f"model.{key}", value, "use a positive integer")
    _require(
        m.hidden_dim % m.num_heads == 0, source, "model.num_heads", m.num_heads,
        f"it must divide model.hidden_dim={m.hidden_dim}",
    )
    _require(
        m.max_seq_len == 0 or m.max_seq_len >= m.seq_len, source, "model.seq_len", m.seq_len,
        f"it is larger than model.max_seq_len={m.max_seq_len}, the longest context the model allows; "
        "lower seq_len or raise max_seq_len",
    )
    _require(m.position in POSITIONS, source, "model.position", m.position, f"use one of {', '.join(POSITIONS)}")
    _require(m.norm in NORMS, source, "model.norm", m.norm, f"use one of {', '.join(NORMS)}")
    _require(m.norm_position in NORM_POSITIONS, source, "model.norm_position", m.norm_position,
             f"use one of {', '.join(NORM_POSITIONS)}")
    _require(m.mlp in MLPS, source, "model.mlp", m.mlp, f"use one of {', '.join(MLPS)}")
    _require(m.norm_epsilon > 0, source, "model.norm_epsilon", m.norm_epsilon, "use a positive value")
    _require(m.rope_theta > 0, source, "model.rope_theta", m.rope_theta, "use a positive value")
    if m.rope_scaling is not None:
        _validate_rope_scaling(m, source)
    _require(
        m.num_kv_heads >= 0 and (m.num_kv_heads == 0 or m.num_heads % m.num_kv_heads == 0), source,
        "model.num_kv_heads", m.num_kv_heads, f"it must divide model.num_heads={m.num_heads} (0 means num_heads)",
    )
    _require(0.0 <= m.dropout < 1.0, source, "model.dropout", m.dropout, "use a value in [0, 1)")
    for key in ("num_encoder_layers", "num_decoder_layers", "source_len"):
        value = getattr(m, key)
        _require(value >= 0, source, f"model.{key}", value, "use 0 (the default) or a positive integer")
    for key in ("batch_size", "steps", "eval_every", "eval_batches", "log_every", "keep_checkpoints",
                "steps_per_execution", "grad_accum_steps"):
        value = getattr(t, key)
        _require(value >= 1, source, f"train.{key}", value, "use a positive integer")
    _require(t.learning_rate > 0, source, "train.learning_rate", t.learning_rate, "use a positive value")
    _require(
        0 <= t.min_learning_rate <= t.learning_rate, source, "train.min_learning_rate", t.min_learning_rate,
        f"use a value between 0 and train.learning_rate={t.learning_rate}",
    )
    _require(t.warmup_steps >= 0, source, "train.warmup_steps", t.warmup_steps, "use 0 or more")
    _require(t.weight_decay >= 0, source, "train.weight_decay", t.weight_decay, "use 0 or more")
    _require(0 <= t.beta1 < 1, source, "train.beta1", t.beta1, "use a value in [0, 1)")
    _require(0 <= t.beta2 < 1, source, "train.beta2", t.beta2, "use a value in [0, 1)")
    _require(t.clip_norm >= 0, source, "train.clip_norm", t.clip_norm, "use 0 (off) or a positive value")
    _require(t.precision in PRECISIONS, source, "train.precision", t.precision, f"use one of {', '.join(PRECISIONS)}")
    _require(
        t.jit_compile in (True, False, "auto"), source, "train.jit_compile", t.jit_compile, "use auto, true or false"
    )
    _require(t.peak_flops >= 0, source, "train.peak_flops", t.peak_flops, "use 0 (look up) or a positive value")
    s = config.distribute
    _require(s.strategy in STRATEGIES, source, "distribute.strategy", s.strategy, f"use one of {', '.join(STRATEGIES)}")
    _require(m.task in TASKS, source, "model.task", m.task, f"use one of {', '.join(TASKS)}")
    _require(0.0 < d.mask_rate < 1.0, source, "data.mask_rate", d.mask_rate, "use a value in (0, 1)")
    _require(
        t.class_weights in CLASS_WEIGHTS, source, "train.class_weights", t.class_weights,
        f"use one of {', '.join(CLASS_WEIGHTS)}",
    )
    _require(0.0 <= t.label_smoothing < 1.0, source, "train.label_smoothing", t.label_smoothing,
             "use a value in [0, 1)")
    _require(t.checkpoint_every >= 0, source, "train.checkpoint_every", t.checkpoint_every,
             "use 0 (at each eval) or a positive integer")
    _require(t.early_stopping_patience >= 0, source, "train.early_stopping_patience", t.early_stopping_patience,
             "use 0 (off) or a positive integer")
    _require(s.cpu_replicas >= 1, source, "distribute.cpu_replicas", s.cpu_replicas, "use 1 or more")
    _validate_fine_tuning(m, t, source)


def _validate_fine_tuning(m, t, source):
    _require(t.lora_rank >= 0, source, "train.lora_rank", t.lora_rank, "use 0 (off) or a positive integer")
    _require(t.lora_alpha > 0, source, "train.lora_alpha", t.lora_alpha, "use a positive value")
    _require(0.0 <= t.lora_dropout < 1.0, source, "train.lora_dropout", t.lora_dropout, "use a value in [0, 1)")
    targets = names(t.lora_targets)
    unknown = [name for name in targets if name not in LORA_TARGETS]
    _require(targets and not unknown, source, "train.lora_targets", t.lora_targets,
             f"use names among {', '.join(LORA_TARGETS)}, comma-separated or as a list")
    _require(t.quantize in QUANTIZATIONS, source, "train.quantize", t.quantize,
             f"use one of {', '.join(QUANTIZATIONS)}")
    _require(t.quantize == "none" or t.lora_rank > 0, source, "train.quantize", t.quantize,
             "an int8 backbone is frozen and trains through adapters; set train.lora_rank (e.g. 8)")
    for key, rate in (("model.dropout", m.dropout), ("train.lora_dropout", t.lora_dropout)):
        _require(not t.gradient_checkpointing or rate == 0, source, key, rate,
                 "train.gradient_checkpointing recomputes each block, and the second pass would draw other dropout "
                 "masks; set it to 0 or turn train.gradient_checkpointing off")
    _require(t.lora_rank == 0 or t.init_from, source, "train.lora_rank", t.lora_rank,
             "adapters train on a pretrained backbone; set train.init_from to a trained or imported run dir")


def _validate_rope_scaling(m, source):
    scaling, key = m.rope_scaling, "model.rope_scaling"
    if m.position != "rope":
        raise UserError(f"{_where(source, key)}: {key} is set and model.position={m.position!r}: it scales rotary "
                        "positions; set model.position: rope or model.rope_scaling: null")
    _require(scaling["rope_type"] in ROPE_SCALINGS, source, f"{key}.rope_type", scaling["rope_type"],
             f"use one of {', '.join(ROPE_SCALINGS)}")
    for name in ("factor", "low_freq_factor", "original_max_position_embeddings"):
        _require(scaling[name] > 0, source, f"{key}.{name}", scaling[name], "use a positive value")
    _require(scaling["high_freq_factor"] > scaling["low_freq_factor"], source, f"{key}.high_freq_factor",
             scaling["high_freq_factor"], f"use a value above low_freq_factor={scaling['low_freq_factor']}")


def save_config(config, path):
    """Write the resolved config as YAML, atomically."""
    write_atomically(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

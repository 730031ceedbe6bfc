"""The Hugging Face architectures tfllm builds, one record per `model_type`.

A `Family` turns a checkpoint's `config.json` into `GPTBackbone` arguments (and a backbone back
into a `config.json`), and lays out, for every weight of that backbone, the checkpoint tensors it
is made of and how (`layout`); import and export both read that one layout. Hugging Face
`Linear` layers store `(out, in)` matrices, Keras `Dense` kernels are `(in, out)`: transposed;
GPT-2's `Conv1D` already stores `(in, out)`.
"""

import dataclasses
from typing import Callable

import numpy as np

from tfllm import config as config_lib
from tfllm.errors import UserError


@dataclasses.dataclass(frozen=True)
class Family:
    model_type: str
    summary: str
    backbone_options: Callable[[dict], dict]
    layout: Callable  # task model -> iterator of (checkpoint names, variable, how)
    hf_config: Callable  # backbone -> the config.json of its checkpoint
    # The backbone options that make a tfllm model this family (what export checks).
    signature: dict
    # Checkpoint tensor names that a prefix may precede (GPT2LMHeadModel saves "transformer.").
    prefixes: tuple = ("",)
    # The task model the checkpoint holds: a causal LM, or a masked LM (BERT).
    task: str = "causal_lm"
    # The backbone options that the checkpoint's tensors decide, not its config.json: a function
    # of `has(name)`, whether the checkpoint stores the tensor `name`.
    stored_options: Callable[[Callable[[str], bool]], dict] = lambda has: {}


def _gpt2_options(config):
    return dict(
        vocabulary_size=config["vocab_size"], num_layers=config["n_layer"], num_heads=config["n_head"],
        hidden_dim=config["n_embd"], intermediate_dim=config.get("n_inner") or 4 * config["n_embd"],
        max_sequence_length=config["n_positions"], position="learned",
        norm="layer", norm_epsilon=config.get("layer_norm_epsilon", 1e-5), mlp="gelu_tanh",
        use_bias=True, tie_embeddings=True,
    )


# How a checkpoint tensor becomes a backbone weight, and back.
COPY = "copy"  # the same layout
LINEAR = "linear"  # a `Linear` (out, in) matrix: transposed to an (in, out) kernel
FUSED_LINEARS = "fused_linears"  # several `Linear`s side by side in one kernel (q, k, v)
ROWS = "rows"  # a table of which the model keeps the first rows (positions of a shorter context)
FUSED_BIASES = "fused_biases"  # the biases of FUSED_LINEARS, end to end
ROWS_PLUS_TYPE_0 = "rows_plus_type_0"  # BERT's positions with the type-0 embedding added


def _gpt2_layout(model):
    """(checkpoint names, variable, how) for every weight of a GPT-2 checkpoint's causal LM."""
    backbone = model.backbone
    yield ("wte.weight",), backbone.token_embedding.embeddings, COPY
    yield ("wpe.weight",), backbone.position_embedding.position_embeddings, ROWS
    for i, block in enumerate(backbone.transformer_layers):
        h = f"h.{i}."
        attention = block.self_attention
        yield from _norm(block.self_attention_layer_norm, h + "ln_1")
        yield from _conv1d(attention.query_key_value_dense, h + "attn.c_attn")
        yield from _conv1d(attention.output_dense, h + "attn.c_proj")
        yield from _norm(block.feedforward_layer_norm, h + "ln_2")
        yield from _conv1d(block.feedforward_intermediate_dense, h + "mlp.c_fc")
        yield from _conv1d(block.feedforward_output_dense, h + "mlp.c_proj")
    yield from _norm(backbone.layer_norm, "ln_f")


def _gpt2_config(backbone):
    return dict(
        architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=backbone.vocabulary_size,
        n_positions=backbone.max_sequence_length, n_embd=backbone.hidden_dim, n_layer=backbone.num_layers,
        n_head=backbone.num_heads, n_inner=backbone.intermediate_dim, activation_function="gelu_new",
        layer_norm_epsilon=backbone.norm_epsilon, tie_word_embeddings=True,
    )


def _rope(config):
    """(rope_theta, llama3_scaling) of a config.json: transformers 5 writes `rope_parameters`,
    earlier versions `rope_theta` and `rope_scaling`."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or parameters
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    theta = float(parameters.get("rope_theta", config.get("rope_theta", 10000.0)))
    if kind in (None, "default"):
        return theta, None
    if kind == "llama3":
        return theta, config_lib.llama3_scaling(scaling)
    raise UserError(f"config.json: rope scaling {kind!r} is not supported; tfllm imports checkpoints with "
                    "default rotary positions or Llama 3's ('llama3')")


def _llama_options(config):
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    if head_dim * heads != hidden:
        raise UserError(f"config.json: head_dim={head_dim} x num_attention_heads={heads} is not "
                        f"hidden_size={hidden}; tfllm needs head_dim = hidden_size / num_attention_heads")
    if config.get("hidden_act", "silu") != "silu":
        raise UserError(f"config.json: hidden_act={config['hidden_act']!r}; this family needs 'silu' (SwiGLU)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UserError("config.json: attention_bias or mlp_bias is set; tfllm imports Llama checkpoints without biases")
    return dict(
        vocabulary_size=config["vocab_size"], num_layers=config["num_hidden_layers"], num_heads=heads,
        hidden_dim=hidden, intermediate_dim=config["intermediate_size"],
        max_sequence_length=config["max_position_embeddings"], position="rope", rope_theta=_rope(config)[0],
        llama3_scaling=_rope(config)[1],
        norm="rms", norm_epsilon=config.get("rms_norm_eps", 1e-6), mlp="swiglu",
        num_key_value_heads=config.get("num_key_value_heads") or heads, use_bias=False,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def _qwen2_options(config):
    window = config.get("sliding_window")
    if config.get("use_sliding_window") and window is not None and window < config["max_position_embeddings"]:
        raise UserError(f"config.json: use_sliding_window with sliding_window={window} below "
                        f"max_position_embeddings={config['max_position_embeddings']}; tfllm attends over the whole "
                        "context")
    return {**_llama_options({**config, "attention_bias": False}), "qkv_bias": True}


def _mistral_options(config):
    window = config.get("sliding_window")
    if window is not None and window < config["max_position_embeddings"]:
        raise UserError(f"config.json: sliding_window={window} is shorter than max_position_embeddings="
                        f"{config['max_position_embeddings']}; tfllm attends over the whole context, so it "
                        "imports Mistral checkpoints whose window covers it")
    return _llama_options(config)


def _llama_layout(model):
    """(checkpoint names, variable, how) for every weight of a Llama checkpoint's causal LM."""
    backbone = model.backbone
    yield ("model.embed_tokens.weight",), backbone.token_embedding.embeddings, COPY
    for i, block in enumerate(backbone.transformer_layers):
        layer = f"model.layers.{i}."
        attention = block.self_attention
        yield (layer + "input_layernorm.weight",), block.self_attention_layer_norm.scale, COPY
        # One fused (in, q + k + v) kernel: query heads, then key heads, then value heads.
        qkv = tuple(layer + f"self_attn.{name}_proj.weight" for name in "qkv")
        yield qkv, attention.query_key_value_dense.kernel, FUSED_LINEARS
        if attention.qkv_bias:  # Qwen2
            biases = tuple(layer + f"self_attn.{name}_proj.bias" for name in "qkv")
            yield biases, attention.query_key_value_dense.bias, FUSED_BIASES
        yield (layer + "self_attn.o_proj.weight",), attention.output_dense.kernel, LINEAR
        yield (layer + "post_attention_layernorm.weight",), block.feedforward_layer_norm.scale, COPY
        yield (layer + "mlp.gate_proj.weight",), block.feedforward_gate_dense.kernel, LINEAR
        yield (layer + "mlp.up_proj.weight",), block.feedforward_intermediate_dense.kernel, LINEAR
        yield (layer + "mlp.down_proj.weight",), block.feedforward_output_dense.kernel, LINEAR
    yield ("model.norm.weight",), backbone.layer_norm.scale, COPY
    if not backbone.tie_embeddings:
        yield ("lm_head.weight",), backbone.token_embedding.output_embeddings, COPY


def _llama_config(backbone):
    return dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=backbone.vocabulary_size,
        hidden_size=backbone.hidden_dim, intermediate_size=backbone.intermediate_dim,
        num_hidden_layers=backbone.num_layers, num_attention_heads=backbone.num_heads,
        num_key_value_heads=backbone.num_key_value_heads, head_dim=backbone.head_dim,
        max_position_embeddings=backbone.max_sequence_length, rms_norm_eps=backbone.norm_epsilon,
        rope_theta=float(backbone.rope_theta), rope_scaling=config_lib.rope_scaling(backbone.llama3_scaling),
        hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=backbone.tie_embeddings,
    )


def _qwen2_config(backbone):
    config = {**_llama_config(backbone), "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}
    del config["attention_bias"], config["mlp_bias"]
    return config


def _bert_options(config):
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"config.json: position_embedding_type={config['position_embedding_type']!r}; tfllm "
                        "imports BERT checkpoints with absolute positions")
    if config.get("hidden_act", "gelu") != "gelu":
        raise UserError(f"config.json: hidden_act={config['hidden_act']!r}; tfllm imports BERT with 'gelu'")
    return dict(
        vocabulary_size=config["vocab_size"], num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"], hidden_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"], max_sequence_length=config["max_position_embeddings"],
        position="learned", norm="layer", norm_epsilon=config.get("layer_norm_eps", 1e-12), mlp="gelu",
        use_bias=True, tie_embeddings=True, norm_first=False, causal=False,
    )


def _bert_stored_options(has):
    """BERT's pooler is in BertForPreTraining checkpoints and not in BertForMaskedLM ones."""
    return dict(pooler=has("bert.pooler.dense.weight"))


def _bert_layout(model):
    """(checkpoint names, variable, how) for every weight of a BERT checkpoint's masked LM, and
    its pooler when the backbone has one.

    tfllm rows carry one segment (token type 0): its type embedding is folded into every
    position's embedding, which is what BERT adds to a type-0 token."""
    backbone = model.backbone
    embeddings = "bert.embeddings."
    yield (embeddings + "word_embeddings.weight",), backbone.token_embedding.embeddings, COPY
    yield ((embeddings + "position_embeddings.weight", embeddings + "token_type_embeddings.weight"),
           backbone.position_embedding.position_embeddings, ROWS_PLUS_TYPE_0)
    yield from _norm(backbone.layer_norm, embeddings + "LayerNorm")
    for i, block in enumerate(backbone.transformer_layers):
        layer = f"bert.encoder.layer.{i}."
        attention = block.self_attention
        qkv = tuple(layer + f"attention.self.{name}" for name in ("query", "key", "value"))
        yield tuple(name + ".weight" for name in qkv), attention.query_key_value_dense.kernel, FUSED_LINEARS
        yield tuple(name + ".bias" for name in qkv), attention.query_key_value_dense.bias, FUSED_BIASES
        yield from _linear(attention.output_dense, layer + "attention.output.dense")
        yield from _norm(block.self_attention_layer_norm, layer + "attention.output.LayerNorm")
        yield from _linear(block.feedforward_intermediate_dense, layer + "intermediate.dense")
        yield from _linear(block.feedforward_output_dense, layer + "output.dense")
        yield from _norm(block.feedforward_layer_norm, layer + "output.LayerNorm")
    if backbone.pooler:
        yield from _linear(backbone.pooler_dense, "bert.pooler.dense")
    yield from _linear(model.head.intermediate_dense, "cls.predictions.transform.dense")
    yield from _norm(model.head.layer_norm, "cls.predictions.transform.LayerNorm")
    yield ("cls.predictions.bias",), model.head.output_bias, COPY


def _bert_config(backbone):
    return dict(
        architectures=["BertForMaskedLM"], model_type="bert", vocab_size=backbone.vocabulary_size,
        hidden_size=backbone.hidden_dim, num_hidden_layers=backbone.num_layers,
        num_attention_heads=backbone.num_heads, intermediate_size=backbone.intermediate_dim,
        max_position_embeddings=backbone.max_sequence_length, type_vocab_size=1, hidden_act="gelu",
        layer_norm_eps=backbone.norm_epsilon, position_embedding_type="absolute",
    )


def _linear(layer, name):
    yield (name + ".weight",), layer.kernel, LINEAR
    yield (name + ".bias",), layer.bias, COPY


def _conv1d(layer, name):
    """GPT-2's `Conv1D` stores (in, out), as a Keras kernel does."""
    yield (name + ".weight",), layer.kernel, COPY
    yield (name + ".bias",), layer.bias, COPY


def _norm(layer, name):
    yield (name + ".weight",), layer.gamma, COPY
    yield (name + ".bias",), layer.beta, COPY


def to_variable(arrays, variable, how):
    """The value of `variable` made from its checkpoint tensors `arrays` (float32)."""
    if how == LINEAR:
        return arrays[0].T
    if how == FUSED_LINEARS:
        return np.concatenate([array.T for array in arrays], axis=1)
    if how == FUSED_BIASES:
        return np.concatenate(arrays)
    if how == ROWS:
        return arrays[0][: variable.shape[0]]
    if how == ROWS_PLUS_TYPE_0:
        return arrays[0][: variable.shape[0]] + arrays[1][0]
    return arrays[0]


def to_tensors(value, names, how, backbone):
    """The checkpoint tensors `names` of a variable's `value` (the inverse of `to_variable`)."""
    if how == LINEAR:
        return [value.T]
    if how == FUSED_LINEARS:
        head_dim = backbone.head_dim
        query = backbone.num_heads * head_dim
        key_value = backbone.num_key_value_heads * head_dim
        return [part.T for part in np.split(value, [query, query + key_value], axis=1)]
    if how == FUSED_BIASES:
        query = backbone.num_heads * backbone.head_dim
        return np.split(value, [query, query + backbone.num_key_value_heads * backbone.head_dim])
    if how == ROWS_PLUS_TYPE_0:
        return [value, np.zeros((1, value.shape[1]), value.dtype)]  # type 0 already in the rows
    return [value]


GPT2_SIGNATURE = dict(position="learned", norm="layer", mlp="gelu_tanh", use_bias=True, qkv_bias=True,
                      tie_embeddings=True, norm_first=True, causal=True)
LLAMA_SIGNATURE = dict(position="rope", norm="rms", mlp="swiglu", use_bias=False, qkv_bias=False, norm_first=True,
                       causal=True)
QWEN2_SIGNATURE = {**LLAMA_SIGNATURE, "qkv_bias": True}
BERT_SIGNATURE = dict(position="learned", norm="layer", mlp="gelu", use_bias=True, tie_embeddings=True,
                      norm_first=False, causal=False)

FAMILIES = {
    family.model_type: family
    for family in (
        Family("gpt2", "GPT-2: learned positions, LayerNorm, GELU (tanh), tied head", _gpt2_options, _gpt2_layout,
               _gpt2_config, GPT2_SIGNATURE, prefixes=("", "transformer.")),
        Family("llama", "Llama 2 and 3: RMSNorm, SwiGLU, rotary positions, grouped-query attention",
               _llama_options, _llama_layout, _llama_config, LLAMA_SIGNATURE),
        Family("mistral", "Mistral: Llama's blocks, when its sliding window covers the context",
               _mistral_options, _llama_layout, _llama_config, LLAMA_SIGNATURE),
        Family("qwen2", "Qwen2 and 2.5: Llama's blocks with query/key/value biases",
               _qwen2_options, _llama_layout, _qwen2_config, QWEN2_SIGNATURE),
        Family("bert", "BERT: post-norm encoder, exact GELU, with its masked-LM head (and its pooler)", _bert_options,
               _bert_layout, _bert_config, BERT_SIGNATURE, task="masked_lm", stored_options=_bert_stored_options),
    )
}
# The families a tfllm backbone exports as (Mistral checkpoints come back as Llama ones: the same blocks).
EXPORT_FAMILIES = ("gpt2", "llama", "qwen2", "bert")

"""The Hugging Face architectures tfllm builds, one record per `model_type`.

A `Family` turns a checkpoint's `config.json` into backbone arguments (a `GPTBackbone`'s, or a
`Seq2SeqBackbone`'s for BART), and a backbone back into a `config.json`, and lays out, for every
weight of that backbone, the checkpoint tensors it is made of and how (`layout`); import and
export both read that one layout. Hugging Face `Linear` layers store `(out, in)` matrices, Keras
`Dense` kernels are `(in, out)`: transposed; GPT-2's `Conv1D` already stores `(in, out)`.
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
    # The names under which a checkpoint may store the tensor `name` of the layout, tried in
    # order: GPT2LMHeadModel saves "transformer." in front; a BartModel saves no "model.".
    aliases: Callable[[str], tuple] = lambda name: (name,)
    # The task model the checkpoint holds: a causal LM, a masked LM (BERT) or a seq2seq LM (BART).
    task: str = "causal_lm"
    # The backbone options that the checkpoint's tensors decide, not its config.json: a function
    # of `has(name)`, whether the checkpoint stores the tensor `name`.
    stored_options: Callable[[Callable[[str], bool]], dict] = lambda has: {}
    # `(name, why)` of a stored tensor whose value tfllm's model cannot represent, or None: a
    # function of the config.json, `has(name)` and `read(name)` (float32 NumPy). Import refuses
    # such a checkpoint rather than give other logits than `transformers`.
    unsupported_tensor: Callable = lambda config, has, read: None


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
ROWS_AFTER_OFFSET = "rows_after_offset"  # BART's positions: position p is row p + BART_POSITION_OFFSET
COPIES = "copies"  # one table stored under several names (an untied BART's token tables), equal

# BART's position tables have 2 rows more than max_position_embeddings, which it never reads
# (fairseq kept them for the padding index).
BART_POSITION_OFFSET = 2


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


# BART's `activation_function`s, as `transformers`' ACT2FN computes them, that a tfllm MLP computes.
BART_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def _bart_options(config):
    if config.get("scale_embedding"):
        raise UserError("config.json: scale_embedding=true multiplies BART's token embeddings by sqrt(d_model), "
                        "which tfllm's Seq2SeqBackbone has no option for yet; tfllm imports BART checkpoints "
                        "with scale_embedding false")
    activation = config.get("activation_function", "gelu")
    if activation not in BART_ACTIVATIONS:
        raise UserError(f"config.json: activation_function={activation!r}; tfllm imports BART checkpoints with "
                        f"{', '.join(map(repr, BART_ACTIVATIONS))}")
    for encoder_key, decoder_key in (("encoder_attention_heads", "decoder_attention_heads"),
                                     ("encoder_ffn_dim", "decoder_ffn_dim")):
        if config[encoder_key] != config[decoder_key]:
            raise UserError(f"config.json: {encoder_key}={config[encoder_key]} but {decoder_key}="
                            f"{config[decoder_key]}; tfllm's Seq2SeqBackbone gives both stacks one size")
    return dict(
        vocabulary_size=config["vocab_size"], num_encoder_layers=config["encoder_layers"],
        num_decoder_layers=config["decoder_layers"], num_heads=config["encoder_attention_heads"],
        hidden_dim=config["d_model"], intermediate_dim=config["encoder_ffn_dim"],
        max_source_length=config["max_position_embeddings"], max_sequence_length=config["max_position_embeddings"],
        # BART's LayerNorms are torch's default, epsilon 1e-5 whatever config.json says.
        position="learned", norm="layer", norm_epsilon=1e-5, mlp=BART_ACTIVATIONS[activation], use_bias=True,
        tie_embeddings=bool(config.get("tie_word_embeddings", True)), norm_first=False,
    )


def _bart_unsupported_tensor(config, has, read):
    """BART adds `final_logits_bias` to its logits (pretrained checkpoints store zeros); untied
    (`tie_word_embeddings` false), its encoder and decoder read their own token tables, which
    tfllm's one shared embedding holds only when they equal `model.shared`."""
    if has("final_logits_bias") and read("final_logits_bias").any():
        return "final_logits_bias", ("is not zero: BART adds it to every logit and tfllm's Seq2SeqLM has no output "
                                     "bias yet; tfllm imports BART checkpoints whose final_logits_bias is zero")
    if not config.get("tie_word_embeddings", True):
        for name in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
            if has(name) and not np.array_equal(read(name), read("model.shared.weight")):
                return name, ("differs from model.shared.weight (tie_word_embeddings is false); tfllm's "
                              "Seq2SeqBackbone has one token embedding for source and target")
    return None


def _bart_layout(model):
    """(checkpoint names, variable, how) for every weight of a BART checkpoint's seq2seq LM."""
    backbone = model.backbone
    encoder = backbone.encoder
    # Untied, transformers 5 reads (and writes) one token table for each stack besides `shared`.
    tables = ("model.shared.weight",) + (() if backbone.tie_embeddings else (
        "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"))
    yield tables, encoder.token_embedding.embeddings, COPIES
    yield (("model.encoder.embed_positions.weight",), encoder.position_embedding.position_embeddings,
           ROWS_AFTER_OFFSET)
    yield from _norm(encoder.layer_norm, "model.encoder.layernorm_embedding")
    for i, block in enumerate(encoder.transformer_layers):
        yield from _bart_block(block, f"model.encoder.layers.{i}.")
    yield (("model.decoder.embed_positions.weight",), backbone.decoder_position_embedding.position_embeddings,
           ROWS_AFTER_OFFSET)
    yield from _norm(backbone.decoder_layer_norm, "model.decoder.layernorm_embedding")
    for i, block in enumerate(backbone.decoder_layers):
        layer = f"model.decoder.layers.{i}."
        yield from _bart_block(block, layer)
        cross = block.cross_attention
        yield from _linear(cross.query_dense, layer + "encoder_attn.q_proj")
        # One fused (in, k + v) kernel: key heads, then value heads.
        yield from _fused_linears(cross.key_value_dense, [layer + f"encoder_attn.{name}_proj" for name in "kv"])
        yield from _linear(cross.output_dense, layer + "encoder_attn.out_proj")
        yield from _norm(block.cross_attention_layer_norm, layer + "encoder_attn_layer_norm")
    if not backbone.tie_embeddings:
        yield ("lm_head.weight",), encoder.token_embedding.output_embeddings, COPY


def _bart_block(block, layer):
    """The self-attention, MLP and their norms of a BART encoder or decoder layer."""
    attention = block.self_attention
    yield from _fused_linears(attention.query_key_value_dense, [layer + f"self_attn.{name}_proj" for name in "qkv"])
    yield from _linear(attention.output_dense, layer + "self_attn.out_proj")
    yield from _norm(block.self_attention_layer_norm, layer + "self_attn_layer_norm")
    yield from _linear(block.feedforward_intermediate_dense, layer + "fc1")
    yield from _linear(block.feedforward_output_dense, layer + "fc2")
    yield from _norm(block.feedforward_layer_norm, layer + "final_layer_norm")


def _bart_config(backbone):
    activations = {mlp: name for name, mlp in BART_ACTIVATIONS.items() if name != "gelu_pytorch_tanh"}
    if backbone.mlp not in activations:
        raise UserError(f"mlp={backbone.mlp!r}; BART's MLP is one of {', '.join(map(repr, activations))}")
    if backbone.num_key_value_heads != backbone.num_heads:
        raise UserError(f"num_kv_heads={backbone.num_key_value_heads} differs from num_heads={backbone.num_heads}; "
                        "BART has no grouped-query attention")
    if backbone.max_source_length != backbone.max_sequence_length:
        raise UserError(f"source_len={backbone.max_source_length} differs from max_seq_len="
                        f"{backbone.max_sequence_length}; BART's encoder and decoder have one "
                        "max_position_embeddings")
    return dict(
        architectures=["BartForConditionalGeneration"], model_type="bart", vocab_size=backbone.vocabulary_size,
        d_model=backbone.hidden_dim, encoder_layers=backbone.num_encoder_layers,
        decoder_layers=backbone.num_decoder_layers, encoder_attention_heads=backbone.num_heads,
        decoder_attention_heads=backbone.num_heads, encoder_ffn_dim=backbone.intermediate_dim,
        decoder_ffn_dim=backbone.intermediate_dim, max_position_embeddings=backbone.max_sequence_length,
        activation_function=activations[backbone.mlp],
        scale_embedding=False, tie_word_embeddings=backbone.tie_embeddings, is_encoder_decoder=True,
        dropout=backbone.dropout, attention_dropout=backbone.dropout, activation_dropout=0.0,
    )


def _linear(layer, name):
    yield (name + ".weight",), layer.kernel, LINEAR
    yield (name + ".bias",), layer.bias, COPY


def _fused_linears(layer, names):
    """`Linear`s side by side in one Dense: their kernels, then their biases."""
    yield tuple(name + ".weight" for name in names), layer.kernel, FUSED_LINEARS
    yield tuple(name + ".bias" for name in names), layer.bias, FUSED_BIASES


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
    if how == ROWS_AFTER_OFFSET:
        return arrays[0][BART_POSITION_OFFSET: BART_POSITION_OFFSET + variable.shape[0]]
    return arrays[0]  # COPY, COPIES


def to_tensors(value, names, how, backbone):
    """The checkpoint tensors `names` of a variable's `value` (the inverse of `to_variable`)."""
    if how == LINEAR:
        return [value.T]
    if how == FUSED_LINEARS:
        return [part.T for part in np.split(value, _fused_ends(names, backbone), axis=1)]
    if how == FUSED_BIASES:
        return np.split(value, _fused_ends(names, backbone))
    if how == ROWS_PLUS_TYPE_0:
        return [value, np.zeros((1, value.shape[1]), value.dtype)]  # type 0 already in the rows
    if how == ROWS_AFTER_OFFSET:
        return [np.concatenate([np.zeros((BART_POSITION_OFFSET, value.shape[1]), value.dtype), value])]
    if how == COPIES:
        return [value] * len(names)
    return [value]


def _fused_ends(names, backbone):
    """Where each fused projection but the last ends: query | key | value (grouped-query keys
    and values are narrower), or cross-attention's key | value."""
    if len(names) == 2:
        return [backbone.hidden_dim]
    query = backbone.num_heads * backbone.head_dim
    return [query, query + backbone.num_key_value_heads * backbone.head_dim]


GPT2_SIGNATURE = dict(position="learned", norm="layer", mlp="gelu_tanh", use_bias=True, qkv_bias=True,
                      tie_embeddings=True, norm_first=True, causal=True)
LLAMA_SIGNATURE = dict(position="rope", norm="rms", mlp="swiglu", use_bias=False, qkv_bias=False, norm_first=True,
                       causal=True)
QWEN2_SIGNATURE = {**LLAMA_SIGNATURE, "qkv_bias": True}
BERT_SIGNATURE = dict(position="learned", norm="layer", mlp="gelu", use_bias=True, tie_embeddings=True,
                      norm_first=False, causal=False)
# Its mlp is checked by `_bart_config`: gelu or gelu_tanh.
BART_SIGNATURE = dict(position="learned", norm="layer", norm_epsilon=1e-5, use_bias=True, norm_first=False)

FAMILIES = {
    family.model_type: family
    for family in (
        Family("gpt2", "GPT-2: learned positions, LayerNorm, GELU (tanh), tied head", _gpt2_options, _gpt2_layout,
               _gpt2_config, GPT2_SIGNATURE, aliases=lambda name: (name, "transformer." + name)),
        Family("llama", "Llama 2 and 3: RMSNorm, SwiGLU, rotary positions, grouped-query attention",
               _llama_options, _llama_layout, _llama_config, LLAMA_SIGNATURE),
        Family("mistral", "Mistral: Llama's blocks, when its sliding window covers the context",
               _mistral_options, _llama_layout, _llama_config, LLAMA_SIGNATURE),
        Family("qwen2", "Qwen2 and 2.5: Llama's blocks with query/key/value biases",
               _qwen2_options, _llama_layout, _qwen2_config, QWEN2_SIGNATURE),
        Family("bert", "BERT: post-norm encoder, exact GELU, with its masked-LM head (and its pooler)", _bert_options,
               _bert_layout, _bert_config, BERT_SIGNATURE, task="masked_lm", stored_options=_bert_stored_options),
        Family("bart", "BART: post-norm encoder-decoder, learned positions, GELU, one shared token embedding",
               _bart_options, _bart_layout, _bart_config, BART_SIGNATURE, task="seq2seq",
               aliases=lambda name: (name, name.removeprefix("model.")), unsupported_tensor=_bart_unsupported_tensor),
    )
}
# The families a tfllm backbone exports as (Mistral checkpoints come back as Llama ones: the same blocks).
EXPORT_FAMILIES = ("gpt2", "llama", "qwen2", "bert", "bart")

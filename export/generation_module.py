"""The servable graph: text in, text out, with the tokenizer and the KV-cached decoding loop inside."""

import tensorflow as tf

from tfllm import decoding
from tfllm.export.controlled_sampler import ControlledSampler
from tfllm.data.seq2seq_pipeline import encode_sources, encode_targets, target_log_probability
from tfllm.prompt_packer import PromptPacker, SourcePacker
from tfllm.samplers.validation import request_check

GENERATE_SIGNATURE = (
    tf.TensorSpec([None], tf.string, name="prompts"),
    tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int32, name="seed"),
)
SCORE_SIGNATURE = (tf.TensorSpec([None], tf.string, name="texts"),)
# An encoder-decoder scores targets given their sources.
SCORE_TARGETS_SIGNATURE = (tf.TensorSpec([None], tf.string, name="sources"),
                           tf.TensorSpec([None], tf.string, name="targets"))


def _check(condition, message, *values):
    """An assertion op: a failed request answers InvalidArgument with `message` and `values`."""
    return tf.debugging.Assert(condition, [message, *values])


def _after(checks, *tensors):
    """`tensors`, available only once `checks` have passed.

    Without this, the ops that size the buffers from a bad `max_new_tokens` could run (and fail
    with a less helpful message, or allocate) before the assertion that explains the problem.
    """
    with tf.control_dependencies(checks):
        return [tf.identity(tensor) for tensor in tensors]


class GenerationModule(tf.Module):
    """A `tf.Module` with the `generate` and `score` serving functions of a `CausalLM`.

    Both functions run entirely in the graph (tokenize, decode, detokenize) with ops of stock
    TensorFlow and tensorflow-text, so the saved module runs in TensorFlow Serving or in a
    process that imports only `tensorflow` and `tensorflow_text`. Generation runs the code of
    `tfllm.generator.Generator`, traced: `tfllm.prompt_packer.PromptPacker` puts the end-of-text
    id in front of each prompt, cuts it from the left to leave room for `max_new_tokens` in the
    context and pads it into a bucketed buffer; `tfllm.decoding.decode` fills the KV cache in
    one pass over the prompt columns and a `ControlledSampler` decodes until every row has
    written the end-of-text id or `longest prompt + max_new_tokens` is reached. The request's
    settings are checked against `tfllm.samplers.validation.SETTINGS`, whose request rules
    word the errors. With `jit_compile` that decoding (cache fill and sampling loop, no string
    op) is compiled with XLA, once per batch size and buffer shape: on CPU it decodes several
    times faster than graph mode once compiled. TensorFlow
    Serving runs XLA only when started with `--xla_cpu_compilation_enabled=true`. Seeded draws
    are those of `Generator(..., jit_compile=self.jit_compile)` with the matching sampler:
    stateless random ops draw differently under XLA and in graph mode.

    An encoder-decoder (a `Seq2SeqLM`) takes the same `generate` inputs, each prompt being a
    source (`SourcePacker`: the encoder runs once per request, its cross-attention keys and
    values are computed once), and returns the targets; its `score(sources, targets)` gives
    the log-probability of each target (and its end-of-text id) given its source, the target
    cut to the decoder's context.

    Args:
        model: a `CausalLM` or `Seq2SeqLM` with trained weights.
        tokenizer: the run's `tfllm.tokenizers.Tokenizer`.
        max_length: int. The model's context in tokens.
        jit_compile: bool. Compile the decoding loop with XLA. Defaults to `True`.

    Call arguments:
        generate(prompts, max_new_tokens, temperature, top_k, top_p, seed): `prompts` string
            (batch,); the rest are scalars for the whole batch: `max_new_tokens` int32 in
            [1, max_length - 1], `temperature` float32 >= 0 (0 is greedy), `top_k` int32 >= 0
            (0 is off), `top_p` float32 in (0, 1] (1 is off), `seed` int32 (below 0 draws a
            fresh seed). Returns `{"text": string (batch,), "num_tokens": int32 (batch,)}`,
            the completions without the prompt, cut before the first end-of-text id.
        score(texts): string (batch,). Returns float32 `log_probability` (the sum of the
            log-probabilities of each text's tokens after the end-of-text id), int32
            `num_tokens` (the tokens scored) and float32 `perplexity`
            (`exp(-log_probability / num_tokens)`, 1 for an empty text), each (batch,). A text
            longer than the context is scored on its first `max_length - 1` tokens.

    Example:
    ```python
    run = tfllm.run.Run.open("runs/demo")
    model, _ = run.load_model()
    module = GenerationModule(model, run.tokenizer, max_length=run.config.max_seq_len)
    module.save("export/1")
    module.generate(tf.constant(["def f("]), 20, 0.0, 0, 1.0, 0)["text"]
    ```
    """

    def __init__(self, model, tokenizer, max_length, jit_compile=True):
        super().__init__(name="generation_module")
        self.packer = PromptPacker.for_tokenizer(max_length, tokenizer)
        self.source_packer = None
        if getattr(model, "is_encoder_decoder", False):
            self.source_packer = SourcePacker(tokenizer, model.backbone.max_source_length, max_length)
        self.stop_token_ids = (tokenizer.eos_id,)
        if not isinstance(jit_compile, bool):
            raise ValueError(f"jit_compile must be True or False. Received: jit_compile={jit_compile!r}")
        self.max_length = max_length
        self.jit_compile = jit_compile
        # Tracked: the tokenizer's tables and the model's variables are what the graphs
        # capture, and a SavedModel only stores captures its object graph reaches.
        self.tokenizer = tokenizer
        self.model_variables = list(model.weights)
        # Bound methods, not the model: an attribute holding the Keras model would save every
        # layer into the object graph, and the servable needs only the traced graphs.
        self._call_model = model.__call__
        self._call_with_cache = model.call_with_cache
        self._build_cache = model.build_cache

    def signatures(self):
        """The signature map to save: `generate` (also `serving_default`) and `score`."""
        generate = self.generate.get_concrete_function()
        score = self.score_targets if self.source_packer is not None else self.score
        return {"serving_default": generate, "generate": generate, "score": score.get_concrete_function()}

    def save(self, path):
        """Writes the SavedModel: the signatures, the tokenizer and the model's variables.

        The root saved is a bare module holding only what the signatures capture: TensorFlow
        traces every `tf.function` of the object graph again when saving, which for `generate`
        would double the export time and the size of the graph.
        """
        root = tf.Module()
        root.tokenizer = self.tokenizer
        root.model_variables = self.model_variables
        tf.saved_model.save(root, path, signatures=self.signatures())

    # Every loop and branch below is an explicit TensorFlow op, so AutoGraph has nothing to
    # convert; skipping it halves the tracing time of an export.
    @tf.function(input_signature=GENERATE_SIGNATURE, autograph=False)
    def generate(self, prompts, max_new_tokens, temperature, top_k, top_p, seed):
        checks = self._check_generate_inputs(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                             top_k=top_k, top_p=top_p, seed=seed)
        prompts, max_new_tokens, temperature, top_k, top_p = _after(
            checks, prompts, max_new_tokens, temperature, top_k, top_p
        )
        # Built inside the trace, so the compiled loop is a nested function of this one and not
        # a separate object of the SavedModel. Its inputs carry every shape XLA needs.
        decode = tf.function(self._decode, jit_compile=self.jit_compile, autograph=False)
        if self.source_packer is None:
            packed = self.pack(prompts, max_new_tokens)
            tokens = decode(packed, temperature, top_k, top_p, seed)
        else:
            packed, sources, _ = self.source_packer(prompts, max_new_tokens)
            tokens = decode(packed, temperature, top_k, top_p, seed, sources)
        completions = decoding.completions(tokens, packed.lengths, max_new_tokens, self.stop_token_ids)
        text = self.tokenizer.detokenize(completions)
        # Byte-level tokens can end inside a character; the answer must stay valid UTF-8.
        text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
        return {"text": text, "num_tokens": tf.cast(completions.row_lengths(), tf.int32)}

    @tf.function(input_signature=SCORE_SIGNATURE, autograph=False)
    def score(self, texts):
        (texts,) = _after([_check(tf.size(texts) > 0, "texts must hold at least one text")], texts)
        token_ids = self.packer.add_start_id(self.tokenizer.tokenize(texts))[:, : self.max_length]
        lengths = tf.cast(token_ids.row_lengths(), tf.int32)
        dense = token_ids.to_tensor(0)  # (batch, longest)
        mask = tf.sequence_mask(lengths, tf.shape(dense)[1])
        logits = self._call_model({"token_ids": dense, "padding_mask": tf.cast(mask, tf.int32)}, training=False)
        # Position i predicts token i + 1: (batch, longest - 1, vocab) against (batch, longest - 1).
        log_probabilities = tf.nn.log_softmax(tf.cast(logits[:, :-1], tf.float32), axis=-1)
        token_log_probabilities = tf.gather(log_probabilities, dense[:, 1:], batch_dims=2)
        scored = tf.cast(mask[:, 1:], tf.float32)
        log_probability = tf.reduce_sum(token_log_probabilities * scored, axis=1)
        num_tokens = lengths - 1
        mean = tf.math.divide_no_nan(log_probability, tf.cast(num_tokens, tf.float32))
        return {"log_probability": log_probability, "num_tokens": num_tokens, "perplexity": tf.exp(-mean)}

    @tf.function(input_signature=SCORE_TARGETS_SIGNATURE, autograph=False)
    def score_targets(self, sources, targets):
        checks = [_check(tf.size(sources) > 0, "sources must hold at least one source"),
                  _check(tf.equal(tf.size(sources), tf.size(targets)), "sources and targets must pair up: got",
                         tf.size(sources), tf.size(targets))]
        sources, targets = _after(checks, sources, targets)
        encoder_inputs = encode_sources(self.tokenizer, sources, self.source_packer.source_len)
        del encoder_inputs["cut"]
        decoder_inputs, next_ids, weights, _ = encode_targets(self.tokenizer, targets, self.max_length)
        logits = self._call_model({**encoder_inputs, **decoder_inputs}, training=False)
        log_probability = target_log_probability(logits, next_ids, weights)
        num_tokens = tf.cast(tf.reduce_sum(weights, axis=1), tf.int32)
        mean = tf.math.divide_no_nan(log_probability, tf.cast(num_tokens, tf.float32))
        return {"log_probability": log_probability, "num_tokens": num_tokens, "perplexity": tf.exp(-mean)}

    def pack(self, prompts, max_new_tokens):
        """The `PackedPrompts` that `generate` decodes: string (batch,) and an int32 scalar."""
        return self.packer(self.tokenizer.tokenize(prompts), max_new_tokens)

    def _check_generate_inputs(self, prompts, **settings):
        """The assertion ops of the `generate` inputs, worded by the settings' request rules."""
        checks = [_check(tf.size(prompts) > 0, "prompts must hold at least one prompt")]
        for name, value in settings.items():
            check = request_check(name, value, max_length=self.max_length)
            if check is not None:
                condition, message = check
                checks.append(_check(condition, message, value))
        return checks

    def _decode(self, packed, temperature, top_k, top_p, seed, sources=None):
        """The buffer of `packed` (a `PackedPrompts`) decoded with the request's settings; an
        encoder-decoder's for the encoder inputs `sources`."""
        sampler = ControlledSampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        build_cache = decoding.cache_builder(self._build_cache, sources)
        return decoding.decode(build_cache, self._call_with_cache, sampler, packed, self.stop_token_ids)

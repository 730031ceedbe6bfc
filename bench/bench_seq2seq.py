"""Training and generation speed of tfllm's `Seq2SeqLM` against KerasHub's `BartSeq2SeqLM`.

Both models get the same sizes: vocabulary, layers (`--num-layers` encoder blocks and as many
decoder blocks, BART's one `num_layers`), heads, hidden and MLP sizes, one position table of
`--max-length` rows for each stack, dropout 0, float32. tfllm is built as BART is: learned
positions, post-norm (`norm_first=False`, the embeddings normalized too), exact GELU
(`mlp="gelu"`), biases everywhere, LayerNorm epsilon 1e-5, the token embedding tied to the
output head. Weights are random (each library's own initializers); only speed is compared.

Training: `model.fit` on the same random batches (`--batch-size` rows of `--source-len` source
and `--target-len` target ids, every position real and weighted), each side compiled with
tfllm's AdamW (`tfllm.optimizers.adamw`, the default of `TaskModel.compile`), the same loss and
metric and the same `jit_compile` (`--jit`). Both warm up (trace, compile), then alternate
A/B/A/B for `--rounds` rounds of `--steps` steps, each timed from its first to its last batch
end. Reported: target tokens and source + target tokens per wall second.

Generation: `--gen-batch-sizes` rows of the same random source ids, exactly `--new-tokens` new
tokens (no stop token on either side), greedy and beam search with `--num-beams` beams. tfllm
decodes the way users run it, `Generator.generate_ids` on source strings, through a char
tokenizer whose ids are exactly the random ids (id `4 + i` is code point U+4E00 + i);
KerasHub's `generate` gets the same ids with `preprocessor=None` (its documented way to
generate from ids: `encoder_token_ids`, `encoder_padding_mask`, and `decoder_token_ids` of
length 1 + new tokens holding the start id, `decoder_padding_mask` True there only) and
`stop_token_ids=None`, so it fills every column. Both decode on the same start id (1) with
`jit_compile` `--jit`. Each cell builds both models, runs each once (trace and compile,
reported as "first call"), then alternates A/B for `--gen-rounds` rounds; tokens/s counts the
returned sequences' new tokens (batch x new tokens; beams are not counted). The last column
gives tfllm's median call and, of it, the host-side tokenizing and packing of the sources
(`Generator.pack`, timed apart), which KerasHub, given ids, does not pay.

Every ratio is tfllm's median over KerasHub's; the CPU-time ratio (process CPU seconds) is
less sensitive to other load on a shared machine.

Run from the repository root:

    python bench/bench_seq2seq.py                  # training, then batch 1 and 8, greedy and beam 4
    python bench/bench_seq2seq.py --quick          # fewer steps and rounds
    python bench/bench_seq2seq.py --jit true --hidden-dim 256 --intermediate-dim 1024

Writes the table to bench/out/seq2seq.md.
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfllm.generator import Generator  # noqa: E402
from tfllm.models.seq2seq_backbone import Seq2SeqBackbone  # noqa: E402
from tfllm.models.seq2seq_lm import Seq2SeqLM  # noqa: E402
from tfllm.optimizers import adamw  # noqa: E402
from tfllm.samplers import BeamSampler, GreedySampler  # noqa: E402
from tfllm.tokenizers import EOS_ID  # noqa: E402
from tfllm.tokenizers.char_tokenizer import CharTokenizer  # noqa: E402
from tfllm.tokenizers.tokenizer import NUM_SPECIAL_TOKENS  # noqa: E402
from bench_common import write_atomically  # noqa: E402

# The char tokenizer's first code point: a block of letters that holds every id of a 20k vocabulary.
FIRST_CODE_POINT = 0x4E00
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "seq2seq.md")


def build_tfllm(args):
    backbone = Seq2SeqBackbone(
        vocabulary_size=args.vocabulary_size, num_encoder_layers=args.num_layers,
        num_decoder_layers=args.num_layers, num_heads=args.num_heads, hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim, max_source_length=args.max_length,
        max_sequence_length=args.max_length, dropout=0.0, position="learned", mlp="gelu", norm_first=False,
    )
    return Seq2SeqLM(backbone)


def build_kerashub(args):
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=args.vocabulary_size, num_layers=args.num_layers, num_heads=args.num_heads,
        hidden_dim=args.hidden_dim, intermediate_dim=args.intermediate_dim, dropout=0.0,
        max_sequence_length=args.max_length,
    )
    return keras_hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=None)


def compile_for_training(model, jit_compile):
    model.compile(
        optimizer=adamw(learning_rate=3e-4, weight_decay=0.1, beta_1=0.9, beta_2=0.95, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy("accuracy")],
        jit_compile=jit_compile,
    )
    return model


def random_ids(rng, shape, vocabulary_size):
    """Token ids past the reserved ones (0-3), so none is padding or end-of-text."""
    return rng.integers(NUM_SPECIAL_TOKENS, vocabulary_size, size=shape, dtype=np.int32)


def make_dataset(args, num_batches=8, seed=0):
    """A few fixed random `(x, y, sample_weight)` batches, repeated: the input pipeline costs ~nothing."""
    rng = np.random.default_rng(seed)
    source = random_ids(rng, (num_batches, args.batch_size, args.source_len), args.vocabulary_size)
    target = random_ids(rng, (num_batches, args.batch_size, args.target_len + 1), args.vocabulary_size)
    target[:, :, 0] = EOS_ID  # the decoder's start id
    x = {
        "encoder_token_ids": source,
        "encoder_padding_mask": np.ones_like(source),
        "decoder_token_ids": target[:, :, :-1],
        "decoder_padding_mask": np.ones_like(target[:, :, :-1]),
    }
    weights = np.ones(target[:, :, 1:].shape, np.float32)
    return tf.data.Dataset.from_tensor_slices((x, target[:, :, 1:], weights)).repeat().prefetch(2)


class BatchClock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append((time.perf_counter(), time.process_time()))


def timed_fit(model, dataset, steps):
    """(wall seconds, CPU seconds) of `steps - 1` steps: first to last batch end."""
    clock = BatchClock()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[clock])
    (wall_start, cpu_start), (wall_end, cpu_end) = clock.times[0], clock.times[-1]
    return wall_end - wall_start, cpu_end - cpu_start


def timed(fn):
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(calls, rounds):
    """Median (wall, CPU) seconds of each call over `rounds` rounds of A/B/A/B..."""
    timings = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            timings[key].append(call())
    return {key: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts))
            for key, ts in timings.items()}


def row(measure, batch, lengths, jit, tokens, medians, first):
    """One table row: tokens per second of each side, from the medians of `alternate`."""
    return {
        "measure": measure, "batch": batch, "lengths": lengths, "jit": jit,
        "tfllm": tokens / medians["tfllm"][0], "kerashub": tokens / medians["kerashub"][0],
        "ratio": medians["kerashub"][0] / medians["tfllm"][0],
        "cpu_ratio": medians["kerashub"][1] / medians["tfllm"][1],
        "first_tfllm": first["tfllm"], "first_kerashub": first["kerashub"],
    }


def run_training(args):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    models = {"tfllm": compile_for_training(build_tfllm(args), args.jit),
              "kerashub": compile_for_training(build_kerashub(args), args.jit)}
    dataset = make_dataset(args)
    first = {key: timed(lambda m=model: m.fit(dataset, epochs=1, steps_per_epoch=args.warmup_steps, shuffle=False,
                                               verbose=0))[0]
             for key, model in models.items()}
    medians = alternate({key: lambda m=model: timed_fit(m, dataset, args.steps) for key, model in models.items()},
                        args.rounds)
    steps = args.steps - 1
    lengths = f"{args.source_len} / {args.target_len}"
    jit = f"{models['tfllm'].jit_compile} / {models['kerashub'].jit_compile}"
    target_tokens = steps * args.batch_size * args.target_len
    all_tokens = steps * args.batch_size * (args.source_len + args.target_len)
    return [row("train: target tok/s", args.batch_size, lengths, jit, target_tokens, medians, first),
            row("train: source + target tok/s", args.batch_size, lengths, jit, all_tokens, medians, first)]


def char_tokenizer(vocabulary_size):
    """A char tokenizer whose id `4 + i` is the code point `FIRST_CODE_POINT + i`."""
    return CharTokenizer(code_points=range(FIRST_CODE_POINT, FIRST_CODE_POINT + vocabulary_size - NUM_SPECIAL_TOKENS))


def generation_inputs(args, batch_size, seed=1):
    """`(source strings for tfllm, KerasHub's generate inputs)`: the same source ids on both sides."""
    rng = np.random.default_rng(seed)
    # `encode_sources` appends the end-of-text id to each source; KerasHub gets it written out.
    source = random_ids(rng, (batch_size, args.source_len - 1), args.vocabulary_size)
    texts = ["".join(chr(FIRST_CODE_POINT + int(i) - NUM_SPECIAL_TOKENS) for i in ids) for ids in source]
    encoder_ids = np.concatenate([source, np.full((batch_size, 1), EOS_ID, np.int32)], axis=1)
    decoder_ids = np.zeros((batch_size, 1 + args.new_tokens), np.int32)
    decoder_ids[:, 0] = EOS_ID  # the start id, the only prompt token
    inputs = {
        "encoder_token_ids": encoder_ids,
        "encoder_padding_mask": np.ones_like(encoder_ids),
        "decoder_token_ids": decoder_ids,
        "decoder_padding_mask": decoder_ids != 0,
    }
    return texts, inputs


def run_generation_cell(batch_size, sampler_name, args):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    texts, inputs = generation_inputs(args, batch_size)
    tokenizer = char_tokenizer(args.vocabulary_size)
    generator = Generator(build_tfllm(args), tokenizer, max_length=args.max_length, jit_compile=args.jit)
    kerashub = build_kerashub(args)
    beam = sampler_name == "beam"
    kerashub.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=args.num_beams) if beam else "greedy",
                     jit_compile=args.jit)
    sampler = BeamSampler(num_beams=args.num_beams) if beam else GreedySampler()
    calls = {
        "tfllm": lambda: generator.generate_ids(texts, args.new_tokens, sampler, stop_token_ids=()),
        "kerashub": lambda: kerashub.generate(inputs, stop_token_ids=None),
    }
    first = {}
    for key, call in calls.items():
        start = time.perf_counter()
        output = call()
        first[key] = time.perf_counter() - start
        check_lengths(key, output, batch_size, args.new_tokens)
    medians = alternate({key: lambda c=call: timed(c) for key, call in calls.items()}, args.gen_rounds)
    # The host-side share of tfllm's calls: tokenizing and packing the sources (KerasHub gets ids).
    pack = {"pack": lambda: timed(lambda: generator.pack(texts, args.new_tokens))}
    packing = alternate(pack, args.gen_rounds)["pack"][0]
    name = f"generate: {'beam ' + str(args.num_beams) if beam else 'greedy'}, new tok/s"
    lengths = f"{args.source_len} / {args.new_tokens} new"
    jit = f"{generator.uses_xla} / {kerashub.jit_compile}"
    return {**row(name, batch_size, lengths, jit, batch_size * args.new_tokens, medians, first),
            "call_tfllm": medians["tfllm"][0], "packing": packing}


def check_lengths(key, output, batch_size, new_tokens):
    """Both sides must return `new_tokens` new tokens per row, or the tokens/s compare nothing."""
    if key == "tfllm":
        lengths = [len(ids) for ids in output]
    else:
        # The start id, then every generated column.
        lengths = (np.sum(np.asarray(output["decoder_padding_mask"]), axis=1) - 1).tolist()
    if lengths != [new_tokens] * batch_size:
        raise RuntimeError(f"{key} generated {lengths} tokens per row; expected {new_tokens} in each")


def device_name():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    return f"CPU, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"


def format_table(rows, args):
    lines = [
        f"{args.num_layers} + {args.num_layers} layers, hidden {args.hidden_dim}, {args.num_heads} heads, "
        f"intermediate {args.intermediate_dim}, position tables {args.max_length}, vocabulary "
        f"{args.vocabulary_size}, float32, dropout 0; AdamW; training: median of {args.rounds} "
        f"alternating rounds of {args.steps - 1} timed steps; generation: median of {args.gen_rounds} alternating "
        f"calls; {device_name()}; TF {tf.__version__}, "
        f"Keras {keras.__version__}, KerasHub {keras_hub.__version__}.",
        "",
        "| measure | batch | source / target tokens | XLA (tfllm / KerasHub) | tfllm | KerasHub | ratio "
        "| ratio (CPU time) | first call tfllm | first call KerasHub | tfllm call / of it packing |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        packing = f"{1000 * r['call_tfllm']:.0f} / {1000 * r['packing']:.0f} ms" if "packing" in r else ""
        lines.append(
            f"| {r['measure']} | {r['batch']} | {r['lengths']} | {r['jit']} | {r['tfllm']:.0f} | "
            f"{r['kerashub']:.0f} | {r['ratio']:.2f}x | {r['cpu_ratio']:.2f}x | {r['first_tfllm']:.1f} s | "
            f"{r['first_kerashub']:.1f} s | {packing} |"
        )
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 timed steps, 2 training rounds, 3 generation rounds")
    parser.add_argument("--vocabulary-size", type=int, default=2048)
    parser.add_argument("--num-layers", type=int, default=2, help="encoder blocks, and as many decoder blocks")
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--intermediate-dim", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=128, help="rows of each position table")
    parser.add_argument("--source-len", type=int, default=128, help="source tokens (training and generation)")
    parser.add_argument("--target-len", type=int, default=32, help="target tokens in training")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=11, help="training steps per round (the first is not timed)")
    parser.add_argument("--gen-batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--samplers", nargs="+", default=["greedy", "beam"], choices=["greedy", "beam"])
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of training")
    parser.add_argument("--gen-rounds", type=int, default=7, help="alternating calls of each generation cell")
    parser.add_argument("--jit", default="false", choices=["true", "false"],
                        help="jit_compile of both sides, training and generation (both libraries' "
                             "default is off on a CPU, on with a GPU: tfllm's 'auto' and Keras's)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--out", default=OUT_PATH, help="markdown output path")
    args = parser.parse_args()
    args.jit = args.jit == "true"
    if args.quick:
        args.steps, args.rounds, args.gen_rounds = 6, 2, 3
    if max(args.source_len, 1 + args.target_len, 1 + args.new_tokens) > args.max_length:
        parser.error(f"--source-len, --target-len + 1 and --new-tokens + 1 must fit in --max-length "
                     f"{args.max_length}")
    return args


def main():
    args = parse_args()
    start = time.perf_counter()
    rows = [] if args.skip_training else run_training(args)
    for r in rows:
        print(format_table([r], args).splitlines()[-1], flush=True)
    for batch_size in args.gen_batch_sizes:
        for sampler_name in args.samplers:
            rows.append(run_generation_cell(batch_size, sampler_name, args))
            print(format_table(rows[-1:], args).splitlines()[-1], flush=True)
    table = format_table(rows, args)
    write_atomically(args.out, table)
    print(table)
    print(f"wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

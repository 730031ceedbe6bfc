"""Training throughput of tfllm's CausalLM against KerasHub's GPT-2 at equal sizes.

Both models get the same vocabulary, layers, heads, hidden size, MLP size
(4 * hidden), context, dropout 0, the same AdamW, loss and metric, and the
same random token batches. Each cell warms both models up (tracing, XLA
compilation), then times `model.fit` in alternating rounds A/B/A/B..., measured
between the first and the last batch end of each `fit` call, so that load from
other processes, which drifts slowly, hits both sides alike. Each side's tokens
per wall second and per CPU second of this process are the medians over rounds,
and each ratio is tfllm's median over KerasHub's, the two columns beside it.
The CPU-time figures are less sensitive to a busy machine, though spinning
threads count too.

Run from the repository root:

    python bench/bench_train_throughput.py            # full run
    python bench/bench_train_throughput.py --quick    # a few steps per round
    python bench/bench_train_throughput.py --configs baby --precisions float32 --jit false

Writes the table to bench/out/train_throughput.md.
"""

import argparse
import os
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

from tfllm.models.causal_lm import CausalLM  # noqa: E402
from tfllm.models.gpt_backbone import GPTBackbone  # noqa: E402
from tfllm.precision import global_policy  # noqa: E402
from bench_common import write_atomically  # noqa: E402

CONFIGS = {
    "baby": dict(num_layers=4, num_heads=4, hidden_dim=128, context=64, batch=12, vocab=100),
    "small": dict(num_layers=6, num_heads=6, hidden_dim=384, context=256, batch=16, vocab=4096),
}
# (warmup steps, timed steps per round, rounds) per config; --quick shortens them.
STEPS = {"baby": (10, 20, 7), "small": (2, 4, 3)}
QUICK_STEPS = {"baby": (5, 10, 3), "small": (2, 3, 2)}
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "train_throughput.md")


def make_optimizer():
    optimizer = keras.optimizers.AdamW(
        learning_rate=3e-4, weight_decay=0.1, beta_1=0.9, beta_2=0.95, global_clipnorm=1.0
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_model(model, jit_compile):
    model.compile(
        optimizer=make_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy("accuracy")],
        jit_compile=jit_compile,
    )
    return model


def build_tfllm(cfg):
    backbone = GPTBackbone(
        vocabulary_size=cfg["vocab"],
        num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"],
        hidden_dim=cfg["hidden_dim"],
        intermediate_dim=4 * cfg["hidden_dim"],
        max_sequence_length=cfg["context"],
    )
    return CausalLM(backbone)


def build_kerashub(cfg):
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=cfg["vocab"],
        num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"],
        hidden_dim=cfg["hidden_dim"],
        intermediate_dim=4 * cfg["hidden_dim"],
        dropout=0.0,
        max_sequence_length=cfg["context"],
    )
    hidden = backbone(backbone.input)
    logits = backbone.token_embedding(hidden, reverse=True)
    return keras.Model(backbone.input, logits)


def make_dataset(cfg, num_batches=8, seed=0):
    """A few fixed random batches, repeated: the input pipeline costs ~nothing."""
    rng = np.random.default_rng(seed)
    shape = (num_batches, cfg["batch"], cfg["context"] + 1)
    tokens = rng.integers(1, cfg["vocab"], size=shape, dtype=np.int32)
    x = {
        "token_ids": tokens[:, :, :-1],
        "padding_mask": np.ones_like(tokens[:, :, :-1]),
    }
    return tf.data.Dataset.from_tensor_slices((x, tokens[:, :, 1:])).repeat().prefetch(2)


class BatchClock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append((time.perf_counter(), time.process_time()))


def tokens_per_second(model, dataset, steps, cfg):
    """(tokens per wall second, tokens per CPU second) over `steps - 1` steps."""
    clock = BatchClock()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[clock])
    (wall_start, cpu_start), (wall_end, cpu_end) = clock.times[0], clock.times[-1]
    tokens = (steps - 1) * cfg["batch"] * cfg["context"]
    return tokens / (wall_end - wall_start), tokens / (cpu_end - cpu_start)


def run_cell(name, precision, jit_compile, quick):
    cfg = CONFIGS[name]
    warmup, steps, rounds = (QUICK_STEPS if quick else STEPS)[name]
    keras.backend.clear_session()
    with global_policy(precision):
        models = {
            "tfllm": compile_model(build_tfllm(cfg), jit_compile),
            "kerashub": compile_model(build_kerashub(cfg), jit_compile),
        }
        dataset = make_dataset(cfg)
        for model in models.values():
            model.fit(dataset, epochs=1, steps_per_epoch=warmup, shuffle=False, verbose=0)
        results = {key: [] for key in models}
        for _ in range(rounds):
            for key, model in models.items():
                results[key].append(tokens_per_second(model, dataset, steps, cfg))
    row = {"config": name, "precision": precision, "jit": jit_compile, "rounds": results}
    for key, timings in results.items():
        row[key] = statistics.median(wall for wall, _ in timings)
        row[f"{key}_cpu"] = statistics.median(cpu for _, cpu in timings)
    return row


def format_table(rows):
    lines = [
        "| config | precision | jit | tfllm tok/s | KerasHub tok/s | ratio | tfllm tok/CPU-s | KerasHub tok/CPU-s "
        "| ratio (CPU time) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['precision']} | {row['jit']} | "
            f"{row['tfllm']:.0f} | {row['kerashub']:.0f} | {row['tfllm'] / row['kerashub']:.2f}x | "
            f"{row['tfllm_cpu']:.0f} | {row['kerashub_cpu']:.0f} | {row['tfllm_cpu'] / row['kerashub_cpu']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps per round")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        choices=["float32", "mixed_bfloat16"],
    )
    parser.add_argument("--jit", nargs="+", default=["true", "false"], choices=["true", "false"])
    parser.add_argument("--out", default=OUT_PATH, help="markdown output path")
    return parser.parse_args()


def main():
    args = parse_args()
    rows = []
    for name in args.configs:
        for precision in args.precisions:
            for jit in args.jit:
                row = run_cell(name, precision, jit == "true", args.quick)
                rows.append(row)
                rounds = {k: [round(wall) for wall, _ in vs] for k, vs in row["rounds"].items()}
                print(f"{name} {precision} jit={jit}: {rounds}", flush=True)
    table = format_table(rows)
    print(table)
    write_atomically(args.out, table)


if __name__ == "__main__":
    main()

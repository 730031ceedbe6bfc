"""Training throughput of the "small" model across the settings that scale training, against KerasHub.

Times tfllm's CausalLM (6 layers, 6 heads, hidden 384, context 256, batch 16, vocabulary 4096)
in every cell of precision (float32, mixed_bfloat16) x XLA (off, on) x steps_per_execution
(1, 4) x replicas (1, or 2 mirrored CPU replicas over the same global batch), each cell paired
with KerasHub's GPT-2 (`keras_hub.models.GPT2Backbone` + tied head, same sizes) at KerasHub's
best precision x XLA setting and the cell's steps_per_execution, on one device. The best
setting is found first: KerasHub is screened over precision x XLA on one device (one warm-up,
one timed `fit`); a 2-replica cell is compared with KerasHub on one device at the same global
batch (the question it answers: what do 2 replicas buy over the best single-device run).

Each cell warms its model up (tracing, XLA compilation), then times `fit` calls of `--steps`
optimizer steps in alternating rounds tfllm/KerasHub/tfllm/KerasHub..., so load from other
processes on a shared machine hits both sides of a pair alike. Every number is given twice:
per wall second and per CPU second of this process (all threads summed). On a shared VM whose
second core comes and goes, wall throughput jumps between two levels while throughput per CPU
second mostly stays put (threads spinning for a descheduled partner still count), so the
CPU-time columns are the ones to compare; the screen ranks by them too.
tokens/s is the median over rounds; a ratio is tfllm's median over KerasHub's. MFU is
tokens per CPU second x model FLOPs per token (`tfllm.flops.training_flops_per_token`) / the
FLOPs per CPU second of a large matmul in the cell's compute dtype (`tfllm.flops.
measure_cpu_flops`, the better of a measurement at the start and one at the end): the share of
the matmul peak that the CPU time the model got turned into model FLOPs.

Run from the repository root:

    python bench/bench_scaling.py             # all 16 cells, 4 rounds of 8 steps (~30 min on 2 cores)
    python bench/bench_scaling.py --quick     # the trainer's CPU default and one change of each
                                              # axis: 5 cells, 2 rounds of 8 steps (~9 min)
    python bench/bench_scaling.py --precisions mixed_bfloat16 --jit false --spe 1 --replicas 1 2

Writes the table to bench/out/scaling.md.
"""

import argparse
import gc
import itertools
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench_common import write_atomically  # noqa: E402
from bench_train_throughput import (  # noqa: E402
    CONFIGS,
    BatchClock,
    build_kerashub,
    build_tfllm,
    make_dataset,
    make_optimizer,
)
from tfllm import distribute  # noqa: E402
from tfllm.flops import measure_cpu_flops, training_flops_per_token  # noqa: E402
from tfllm.precision import global_policy  # noqa: E402

CONFIG = CONFIGS["small"]
PRECISIONS = ("float32", "mixed_bfloat16")
# The trainer's choice on a CPU with bfloat16 instructions: train.precision=auto, jit auto (off),
# one step per execution, one device. --quick times it and each single change from it.
BASE = {"precision": "mixed_bfloat16", "jit": False, "spe": 1, "replicas": 1}
FLOPS_PER_TOKEN = training_flops_per_token(
    CONFIG["num_layers"], CONFIG["hidden_dim"], 4 * CONFIG["hidden_dim"], CONFIG["vocab"], CONFIG["context"]
)
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "scaling.md")


def compile_for_cell(model, jit_compile, steps_per_execution):
    """bench_train_throughput.compile_model's optimizer, loss and metric, plus steps_per_execution."""
    model.compile(
        optimizer=make_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy("accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


def build(kind, strategy, precision, jit_compile, steps_per_execution):
    with global_policy(precision), strategy.scope():
        model = build_tfllm(CONFIG) if kind == "tfllm" else build_kerashub(CONFIG)
        return compile_for_cell(model, jit_compile, steps_per_execution)


def measure_peaks():
    """FLOPs per CPU second of a large matmul, per precision name."""
    return {
        "float32": measure_cpu_flops(repeats=50, clock=time.process_time),
        "mixed_bfloat16": measure_cpu_flops(repeats=50, dtype=tf.bfloat16, clock=time.process_time),
    }


def time_fit(model, dataset, steps):
    """(tokens per wall second, tokens per CPU second) inside one `fit` of `steps` steps.

    Timed from the first to the last batch end, as bench_train_throughput does: the end of a
    `fit` call sometimes stalls for a second or more, which is not training throughput. Keras
    ends a "batch" once per execution, so `steps` must hold two executions at least.
    """
    clock = BatchClock()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[clock])
    (wall_start, cpu_start), (wall_end, cpu_end) = clock.times[0], clock.times[-1]
    tokens = (steps - steps // len(clock.times)) * CONFIG["batch"] * CONFIG["context"]
    return tokens / (wall_end - wall_start), tokens / (cpu_end - cpu_start)


def best_kerashub(strategy, dataset, steps):
    """KerasHub's fastest precision x XLA setting on one device (per CPU second), and its model."""
    best = None
    for precision, jit in itertools.product(PRECISIONS, (False, True)):
        model = build("kerashub", strategy, precision, jit, 1)
        model.fit(dataset, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
        wall, cpu = time_fit(model, dataset, steps)
        print(f"kerashub {precision} jit={jit}: {wall:.0f} tok/s, {cpu:.0f} tok/CPU-s", flush=True)
        if best is None or cpu > best[0]:
            best = (cpu, {"precision": precision, "jit": jit}, model)
        del model
        gc.collect()
    return best[1], best[2]


def kerashub_baselines(setting, screened, strategy, dataset, spes):
    """KerasHub at its best precision x XLA setting for each steps_per_execution value, warmed up."""
    baselines = {1: screened}
    for spe in set(spes) - {1}:
        baselines[spe] = build("kerashub", strategy, setting["precision"], setting["jit"], spe)
        baselines[spe].fit(dataset, epochs=1, steps_per_epoch=max(spe, 2), shuffle=False, verbose=0)
    return baselines


def run_cell(cell, strategies, baseline, dataset, steps, rounds):
    model = build("tfllm", strategies[cell["replicas"]], cell["precision"], cell["jit"], cell["spe"])
    try:
        # One execution at least, so spe=4 compiles its loop before timing.
        model.fit(dataset, epochs=1, steps_per_epoch=max(cell["spe"], 2), shuffle=False, verbose=0)
    except tf.errors.InvalidArgumentError:
        # Keras cannot XLA-compile a step across replicas, nor run several steps per execution
        # across replicas; the trainer refuses both settings.
        reason = "XLA across replicas, keras-team/keras#19005" if cell["jit"] else "keras-team/keras#19246"
        return {**cell, "error": f"InvalidArgumentError ({reason})"}
    pairs = [(time_fit(model, dataset, steps), time_fit(baseline, dataset, steps)) for _ in range(rounds)]
    del model
    gc.collect()
    median = lambda values: statistics.median(list(values))  # noqa: E731
    row = {
        **cell,
        "tfllm": median(a[0] for a, _ in pairs),
        "kerashub": median(b[0] for _, b in pairs),
        "tfllm_cpu": median(a[1] for a, _ in pairs),
        "kerashub_cpu": median(b[1] for _, b in pairs),
        "rounds": [(round(a[0]), round(b[0])) for a, b in pairs],
    }
    return {**row, "ratio": row["tfllm"] / row["kerashub"], "cpu_ratio": row["tfllm_cpu"] / row["kerashub_cpu"]}


def cells(args):
    if args.quick:
        flips = {"precision": "float32", "jit": True, "spe": 4, "replicas": 2}
        return [BASE] + [{**BASE, key: value} for key, value in flips.items()]
    grid = itertools.product(args.precisions, [j == "true" for j in args.jit], args.spe, args.replicas)
    return [{"precision": p, "jit": j, "spe": s, "replicas": r} for p, j, s, r in grid]


def format_table(rows, kerashub_setting, peak_flops):
    lines = [
        f"KerasHub's best setting (screened over precision x XLA on one device): "
        f"{kerashub_setting['precision']}, jit={kerashub_setting['jit']}, on one device, at each row's "
        f"steps_per_execution. "
        f"Matmul peak per CPU second: float32 {peak_flops['float32'] / 1e9:.0f} GFLOP, "
        f"bfloat16 {peak_flops['mixed_bfloat16'] / 1e9:.0f} GFLOP.",
        "",
        "| precision | jit | spe | replicas | tfllm tok/CPU-s | KerasHub tok/CPU-s | ratio (CPU time) "
        "| tfllm tok/s | KerasHub tok/s | ratio (wall) | MFU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['precision']} | {r['jit']} | {r['spe']} | {r['replicas']} | fails in Keras: "
                         f"{r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['precision']} | {r['jit']} | {r['spe']} | {r['replicas']} | {r['tfllm_cpu']:.0f} | "
            f"{r['kerashub_cpu']:.0f} | {r['cpu_ratio']:.2f}x | {r['tfllm']:.0f} | {r['kerashub']:.0f} | "
            f"{r['ratio']:.2f}x | {r['tfllm_cpu'] * FLOPS_PER_TOKEN / peak_flops[r['precision']]:.1%} |"
        )
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 cells around the trainer's default, short rounds")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--jit", nargs="+", default=["false", "true"], choices=["true", "false"])
    parser.add_argument("--spe", nargs="+", type=int, default=[1, 4], help="steps_per_execution values")
    parser.add_argument("--replicas", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    parser.add_argument("--steps", type=int, default=8, help="steps per timed fit (two executions or more)")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds per cell")
    parser.add_argument("--out", default=OUT_PATH, help="markdown output path")
    return parser.parse_args()


def main():
    args = parse_args()
    steps = args.steps
    rounds = args.rounds or (2 if args.quick else 4)
    for spe in {cell["spe"] for cell in cells(args)}:
        if steps % spe or steps // spe < 2:
            sys.exit(f"--steps {steps} must be a multiple of steps_per_execution={spe}, twice or more")
    # Splitting the CPU must come before TensorFlow starts its devices.
    strategies = {2: distribute.make_strategy("mirrored", cpu_replicas=2), 1: distribute.make_strategy("one_device")}
    peak_flops = measure_peaks()
    dataset = make_dataset(CONFIG)
    kerashub_setting, screened = best_kerashub(strategies[1], dataset, steps)
    baselines = kerashub_baselines(kerashub_setting, screened, strategies[1], dataset,
                                   [cell["spe"] for cell in cells(args)])
    rows = []
    for cell in cells(args):
        row = run_cell(cell, strategies, baselines[cell["spe"]], dataset, steps, rounds)
        rows.append(row)
        if "error" in row:
            print(f"{cell}: fails in Keras: {row['error']}", flush=True)
        else:
            print(f"{cell}: tfllm/kerashub tok/s per round {row['rounds']}, "
                  f"CPU-time ratio {row['cpu_ratio']:.2f}x", flush=True)
    # Measured again at the end: a core taken away mid-measurement leaves threads spinning, which
    # lowers FLOPs per CPU second; the better of the two is the peak.
    end = measure_peaks()
    peak_flops = {key: max(value, end[key]) for key, value in peak_flops.items()}
    table = format_table(rows, kerashub_setting, peak_flops)
    print(table)
    write_atomically(args.out, table)


if __name__ == "__main__":
    main()

"""LoRA versus full fine-tuning of configs/sft-tiny.yaml from runs/gpt-tiny: how much of full
fine-tuning's drop in validation loss LoRA gets in the same number of steps.

Every run is `tfllm train --config configs/sft-tiny.yaml` (builtin:python-docs-topics, "Python
help topic: NAME" -> the topic's first paragraph, loss on completion tokens; 71 training and 8
validation pairs) started from the same base run (`--base`, train.init_from), each in its own
process (`python -m tfllm.cli`) and fresh run directory, with early stopping off
(`train.early_stopping_patience=0`), `--steps` steps and a validation every `--eval-every`:

- start: the base model's validation loss, from a run of one step at learning rate 1e-12
  (`train.steps=1 train.learning_rate=1e-12 train.min_learning_rate=0 train.warmup_steps=0
  train.eval_every=1 train.samples=0`), which leaves the weights as they were;
- full: every weight trains, at the config's learning rate (3e-4, down to 3e-5);
- lora: the backbone frozen, adapters of rank `--lora-rank` (`train.lora_rank`), one run per
  `--lora LR:ALPHA:TARGETS` (`train.learning_rate=LR`, `train.min_learning_rate=LR/10` as in the
  config, `train.lora_alpha=ALPHA`, `train.lora_targets=TARGETS`).

Each run's figure is its best validation loss (metrics.jsonl's `val_loss`, lowest over the
evaluations at every `--eval-every` steps up to `--steps`); its reduction is start - best, and a
LoRA run's share is its reduction over full fine-tuning's. Also reported: the wall time of the
`tfllm train` process (TensorFlow's import, data preparation and the final samples included),
the median step time (metrics.jsonl's `step_time`, logged every `train.log_every` steps, less
the first interval, which holds the tracing), the trained and frozen parameters the run prints,
and the size (bytes, as `du -b`) of its last checkpoint, checkpoints/latest/ckpt-STEP.* (the
optimizer's moments included; a LoRA checkpoint holds what trains, not the frozen base).
The runs are deterministic (same seed, same batches): a rerun gives the same losses.

    python bench/bench_lora_sft.py                                  # start, full, LoRA as in configs/lora-tiny.yaml
    python bench/bench_lora_sft.py --lora 3e-3:16:query,value --lora 1e-2:16:query,key,value,attention_output,mlp
    python bench/bench_lora_sft.py --work-dir /tmp/lora_sft/runs    # keep the run directories

Writes the table to bench/out/lora_sft.md.
"""

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import write_atomically  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/sft-tiny.yaml"
OUT_PATH = os.path.join(ROOT, "bench", "out", "lora_sft.md")
# The settings of configs/lora-tiny.yaml: learning rate, alpha, targets.
DEFAULT_LORA = ["1e-3:16:query,key,value,attention_output,mlp"]
PARAMETERS = re.compile(r"Model: ([\d,]+) parameters, ([\d,]+) trained and ([\d,]+) frozen")


def lora_spec(text):
    """`LR:ALPHA:TARGETS` -> (learning rate, alpha, targets)."""
    try:
        lr, alpha, targets = text.split(":")
        return float(lr), float(alpha), targets
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LR:ALPHA:TARGETS, e.g. 3e-3:16:query,value; got {text!r}")


def train(run_dir, overrides, log_path):
    """`tfllm train --config CONFIG --run-dir run_dir overrides...` in a fresh process; returns
    its figures: wall seconds, parameter counts, best val loss and step, checkpoint bytes."""
    command = [sys.executable, "-m", "tfllm.cli", "train", "--config", CONFIG, "--run-dir", run_dir, *overrides]
    print("$", " ".join(command[2:]), flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        status = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    with open(log_path, encoding="utf-8") as log:
        output = log.read()
    if status != 0:
        sys.exit(f"tfllm train exited with {status}; its output is in {log_path}:\n{output[-3000:]}")
    total, trained, frozen = (int(n.replace(",", "")) for n in PARAMETERS.search(output).groups())
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    evaluations = [(r["val_loss"], r["step"]) for r in records if "val_loss" in r]
    # The first logged interval holds the tracing; the median of the others is the steady step.
    step_times = [r["step_time"] for r in records[1:] if "step_time" in r]
    best_loss, best_step = min(evaluations)
    latest = os.path.join(run_dir, "checkpoints", "latest")
    last_step = max(int(re.search(r"ckpt-(\d+)\.", p).group(1)) for p in glob.glob(os.path.join(latest, "ckpt-*.*")))
    checkpoint_bytes = sum(os.path.getsize(p) for p in glob.glob(os.path.join(latest, f"ckpt-{last_step}.*")))
    return dict(seconds=seconds, step_time=statistics.median(step_times) if step_times else None, trained=trained, frozen=frozen, total=total, best_loss=best_loss,
                best_step=best_step, evaluations=sorted(evaluations, key=lambda e: e[1]),
                checkpoint_bytes=checkpoint_bytes, checkpoint_step=last_step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="runs/gpt-tiny", help="the pretrained run (train.init_from)")
    parser.add_argument("--steps", type=int, default=60, help="training steps of the full and LoRA runs")
    parser.add_argument("--eval-every", type=int, default=10, help="validate every this many steps")
    parser.add_argument("--full-lr", type=float, default=3e-4, help="full fine-tuning's learning rate (the config's)")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora", type=lora_spec, action="append", default=None, metavar="LR:ALPHA:TARGETS",
                        help=f"a LoRA run; repeat for several (default {DEFAULT_LORA[0]})")
    parser.add_argument("--work-dir", default=None, help="keep the run directories here (default: a temporary one)")
    args = parser.parse_args()
    loras = args.lora or [lora_spec(s) for s in DEFAULT_LORA]
    if not os.path.exists(os.path.join(ROOT, args.base, "checkpoints")):
        sys.exit(f"{args.base} has no checkpoint: train it first (tfllm train --run-dir {args.base})")
    common = [f"train.init_from={args.base}", "train.early_stopping_patience=0"]
    steps = [f"train.steps={args.steps}", f"train.eval_every={args.eval_every}"]
    runs = [("start", "base model, not trained", common + [
        "train.steps=1", "train.learning_rate=1e-12", "train.min_learning_rate=0", "train.warmup_steps=0",
        "train.eval_every=1", "train.samples=0"])]
    runs.append(("full", f"full fine-tuning, lr {args.full_lr:g}", common + steps + [
        f"train.learning_rate={args.full_lr:g}", f"train.min_learning_rate={args.full_lr / 10:g}"]))
    for i, (lr, alpha, targets) in enumerate(loras):
        runs.append((f"lora{i}", f"LoRA r{args.lora_rank} alpha {alpha:g} lr {lr:g} on {targets}", common + steps + [
            f"train.lora_rank={args.lora_rank}", f"train.lora_alpha={alpha:g}", f"train.lora_targets={targets}",
            f"train.learning_rate={lr:g}", f"train.min_learning_rate={lr / 10:g}"]))
    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.abspath(args.work_dir or tmp)
        os.makedirs(work, exist_ok=True)
        for name, _, _ in runs:
            if os.path.exists(os.path.join(work, name)):
                sys.exit(f"{work}/{name} exists and `tfllm train` would resume it; remove it or pick another --work-dir")
        results = {}
        for name, label, overrides in runs:
            run_dir = os.path.join(work, name)
            results[name] = train(run_dir, overrides, os.path.join(work, f"{name}.log"))
            r = results[name]
            print(f"{label}: best val loss {r['best_loss']:.4f} at step {r['best_step']} "
                  f"(all: {', '.join(f'{s}: {v:.3f}' for v, s in r['evaluations'])}); {r['seconds']:.0f} s", flush=True)
    start = results["start"]["best_loss"]
    full_drop = start - results["full"]["best_loss"]
    rows = [
        f"| run | best val loss (step) | reduction from {start:.4f} | share of full's | wall time "
        "| median step time | trained / frozen parameters | last checkpoint |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| start: {args.base}, not fine-tuned | {start:.4f} | | | {results['start']['seconds']:.0f} s "
        f"| | | |",
    ]
    for name, label, _ in runs[1:]:
        r = results[name]
        drop = start - r["best_loss"]
        rows.append(
            f"| {label} | {r['best_loss']:.4f} ({r['best_step']}) | {drop:.4f} | {drop / full_drop:.0%} "
            f"| {r['seconds']:.0f} s | {r['step_time']:.2f} s | {r['trained']:,} / {r['frozen']:,} "
            f"| {r['checkpoint_bytes'] / 1e6:.2f} MB (step {r['checkpoint_step']}) |")
    curves = ["", "Validation loss at each evaluation (step: loss):", ""] + [
        f"- {label}: " + ", ".join(f"{s}: {v:.3f}" for v, s in results[name]["evaluations"])
        for name, label, _ in runs[1:]]
    notes = ["", f"{CONFIG} from {args.base}, {args.steps} steps, validation every {args.eval_every}, "
             "early stopping off; best = lowest val_loss over those evaluations."]
    table = "\n".join(rows + curves + notes)
    print(table)
    write_atomically(OUT_PATH, table + "\n")


if __name__ == "__main__":
    main()

"""Fine-tuning memory and speed: full, LoRA rank 8, and LoRA on int8 weights.

A GPT-2 124M-shaped causal LM (12 blocks, 12 heads, hidden 768, MLP 3072, vocabulary 50257,
learned positions, tied embeddings; random weights) trains on random batches of `--batch-size`
x `--seq-len` ids with tfllm's AdamW, float32, no XLA (this CPU's fastest setting), as
`tfllm train` compiles it. Three variants, each in a fresh process so that its peak resident
memory (`ru_maxrss`) is its own:

- full: every weight trains;
- lora: the backbone frozen, rank-8 adapters (alpha 16) on the query and value projections
  (`train.lora_rank=8`, the default targets);
- lora_int8: the same adapters over int8 projections and embeddings (`train.quantize=int8`);

and each again with gradient checkpointing (`train.gradient_checkpointing=true`: every block's
activations computed again in the backward pass), suffixed `+recompute`. Each runs `--warmup` steps (tracing), then `--steps` timed steps; reported are the trainable
parameters, the peak RSS of the process and its rise over the RSS before the model was built,
and the median step time. Ratios are against full fine-tuning in the same invocation.

    python bench/bench_lora.py                 # 3 variants, 2 warmup + 4 timed steps each
    python bench/bench_lora.py --steps 2       # quicker

Writes the table to bench/out/lora.md.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("full", "lora", "lora_int8", "full+recompute", "lora+recompute", "lora_int8+recompute")


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(variant, batch_size, seq_len, warmup, steps):
    """One variant in this process: a JSON-ready dict of its figures."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfllm import lora
    from tfllm.models import CausalLM, GPTBackbone
    from tfllm.optimizers import adamw

    before = rss_mib()
    keras.utils.set_random_seed(0)
    adapters, _, recompute = variant.partition("+")
    model = CausalLM(GPTBackbone(vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768,
                                 intermediate_dim=3072, max_sequence_length=1024, recompute=bool(recompute)))
    if adapters != "full":
        lora.adapt(model.backbone, rank=8, alpha=16, quantize="int8" if adapters == "lora_int8" else "none")
    model.compile(optimizer=adamw(1e-4, 0.1, 0.9, 0.95, 1.0), loss="auto", jit_compile=False)
    trainable, frozen = lora.parameter_counts(model)
    ids = np.random.default_rng(0).integers(1, 50257, (batch_size, seq_len + 1)).astype("int32")
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((batch_size, seq_len), "int32")}
    dataset = tf.data.Dataset.from_tensors((x, ids[:, 1:])).repeat()

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    timer = StepTimes()
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    times = [b - a for a, b in zip([start] + timer.ends, timer.ends)][warmup:]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "trainable": trainable, "frozen": frozen, "before_mib": before, "peak_mib": peak,
            "step_s": statistics.median(times), "steps": len(times)}


def table(results, args):
    lines = [
        f"GPT-2 124M-shaped causal LM, batch {args.batch_size} x {args.seq_len}, float32, no XLA, "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
        f"median of {results['full']['steps']} steps after {args.warmup} warmup steps; each variant in its own "
        "process. \"vs full\" compares with full fine-tuning at the same gradient checkpointing setting.",
        "",
        "| variant | trainable parameters | peak RSS | rise over start | peak vs full | step time | vs full |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in [name for name in VARIANTS if name in results]:
        r = results[name]
        full = results["full+recompute" if name.endswith("+recompute") else "full"]
        lines.append(
            f"| {name} | {r['trainable']:,} ({r['trainable'] / (r['trainable'] + r['frozen']):.2%}) "
            f"| {r['peak_mib']:.0f} MiB | {r['peak_mib'] - r['before_mib']:.0f} MiB "
            f"| {r['peak_mib'] / full['peak_mib']:.2f}x | {r['step_s']:.2f} s | {r['step_s'] / full['step_s']:.2f}x |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variant", choices=VARIANTS, help="measure one variant in this process (internal)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="the variants to measure, comma-separated")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.batch_size, args.seq_len, args.warmup, args.steps)))
        return
    results = {}
    for variant in args.variants.split(","):
        command = [sys.executable, __file__, "--variant", variant, "--batch-size", str(args.batch_size),
                   "--seq-len", str(args.seq_len), "--warmup", str(args.warmup), "--steps", str(args.steps)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
        print(results[variant], flush=True)
    text = table(results, args)
    print(text)
    from bench.bench_common import write_atomically

    write_atomically(os.path.join(os.path.dirname(__file__), "out", "lora.md"), text)


if __name__ == "__main__":
    main()

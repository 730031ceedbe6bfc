"""What int8 weights cost in perplexity: a trained run scored in float32 and in int8.

The run's model (default `runs/gpt-tiny`, trained by `tfllm train`) is scored with
`tfllm.evaluation.TextScorer` (loss, perplexity and bits per byte over every token, as `tfllm
evaluate` does) on the run's own validation split of the built-in corpus (RUN_DIR/corpus/val-*,
the documents it never trained on), first as trained (float32), then with every projection and
embedding matrix in int8 with one scale per output channel (`tfllm.lora.quantize_int8`: what
`tfllm export --quantize int8` serves; `train.quantize=int8` holds a LoRA run's frozen backbone
the same way).

    python bench/bench_int8_perplexity.py [--run-dir runs/gpt-tiny]

Writes the table to bench/out/int8_perplexity.md.
"""

import argparse
import glob
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from bench.bench_common import write_atomically  # noqa: E402
from tfllm.evaluation.text_scorer import TextScorer  # noqa: E402
from tfllm.lora import quantize_int8  # noqa: E402
from tfllm.run import Run  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/gpt-tiny")
    args = parser.parse_args()
    run = Run.open(args.run_dir)
    files = sorted(glob.glob(os.path.join(run.corpus_dir, "val-*.tfrecord")))
    texts = [record.numpy().decode("utf-8") for record in tf.data.TFRecordDataset(files)]
    model, checkpoint = run.load_model()
    rows = []
    for name in ("float32", "int8"):
        if name == "int8":
            quantize_int8(model)
        weight_bytes = sum(w.numpy().nbytes for w in model.weights)
        scores = TextScorer(model, run.tokenizer, seq_len=run.config.model.seq_len)(texts)
        rows.append((name, weight_bytes, scores))
        print(name, weight_bytes, scores, flush=True)
    (_, float_bytes, base), (_, int8_bytes, quantized) = rows
    text = "\n".join([
        f"`{checkpoint}` on its validation split: {len(texts)} documents, {base['tokens']:,} tokens, "
        f"{base['bytes']:,} bytes.",
        "",
        "| weights | weight bytes | loss (nats/token) | perplexity | bits per byte |",
        "|---|---|---|---|---|",
        *[f"| {name} | {size / 2**20:.2f} MiB | {s['loss']:.4f} | {s['perplexity']:.3f} | {s['bits_per_byte']:.4f} |"
          for name, size, s in rows],
        "",
        f"int8 / float32: weight bytes {int8_bytes / float_bytes:.2f}x, perplexity "
        f"{quantized['perplexity'] / base['perplexity']:.4f}x ({(quantized['perplexity'] / base['perplexity'] - 1):+.2%}).",
    ]) + "\n"
    print(text)
    write_atomically(os.path.join(os.path.dirname(__file__), "out", "int8_perplexity.md"), text)


if __name__ == "__main__":
    main()

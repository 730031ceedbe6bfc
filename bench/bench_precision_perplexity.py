"""What each decoding precision costs in perplexity: a trained run scored in float32, bfloat16 and int8.

The run's model (default `runs/gpt-tiny`, trained by `tfllm train`) is scored with
`tfllm.evaluation.TextScorer` (loss, perplexity and bits per byte over every token, as `tfllm
evaluate` does) on the run's own validation split of the built-in corpus (RUN_DIR/corpus/val-*,
the documents it never trained on), once per precision of `tfllm.precision.for_decoding` (what
`tfllm evaluate|generate|export --precision` use): as trained (float32), with every weight in
bfloat16, and with every projection and embedding matrix in int8 with one scale per output
channel (`train.quantize=int8` holds a LoRA run's frozen backbone the same way).

    python bench/bench_precision_perplexity.py [--run-dir runs/gpt-tiny]

Writes the table to bench/out/precision_perplexity.md.
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
from tfllm.precision import DECODING_PRECISIONS  # noqa: E402
from tfllm.run import Run  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/gpt-tiny")
    args = parser.parse_args()
    run = Run.open(args.run_dir)
    files = sorted(glob.glob(os.path.join(run.corpus_dir, "val-*.tfrecord")))
    texts = [record.numpy().decode("utf-8") for record in tf.data.TFRecordDataset(files)]
    rows = []
    for name in DECODING_PRECISIONS:
        model, checkpoint = run.load_servable_model(name)
        weight_bytes = sum(w.numpy().nbytes for w in model.weights)
        scores = TextScorer(model, run.tokenizer, seq_len=run.config.model.seq_len)(texts)
        rows.append((name, weight_bytes, scores))
        print(name, weight_bytes, scores, flush=True)
    _, float_bytes, base = rows[0]
    text = "\n".join([
        f"`{checkpoint}` on its validation split: {len(texts)} documents, {base['tokens']:,} tokens, "
        f"{base['bytes']:,} bytes.",
        "",
        "| weights | weight bytes | loss (nats/token) | perplexity | bits per byte | perplexity / float32 |",
        "|---|---|---|---|---|---|",
        *[f"| {name} | {size / 2**20:.2f} MiB ({size / float_bytes:.2f}x) | {s['loss']:.4f} | {s['perplexity']:.3f} | "
          f"{s['bits_per_byte']:.4f} | {s['perplexity'] / base['perplexity']:.4f}x "
          f"({s['perplexity'] / base['perplexity'] - 1:+.2%}) |"
          for name, size, s in rows],
    ]) + "\n"
    print(text)
    write_atomically(os.path.join(os.path.dirname(__file__), "out", "precision_perplexity.md"), text)


if __name__ == "__main__":
    main()

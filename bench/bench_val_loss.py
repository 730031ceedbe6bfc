"""Validation loss of tfllm's CausalLM and KerasHub's GPT-2 after the same training on real text.

Both models are trained from the same seed on the same batches of the built-in corpus
(CPython's documentation, split by document), with the same AdamW, warmup + cosine schedule,
loss and number of steps, then evaluated on the same validation blocks. Sizes are the "baby"
(character vocabulary) and "small" configs of bench_train_throughput.py.

    python bench/bench_val_loss.py                 # both configs
    python bench/bench_val_loss.py --configs baby --steps 200

Writes the table to bench/out/val_loss.md.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

from bench_common import write_atomically  # noqa: E402
from bench_train_throughput import CONFIGS, build_kerashub, build_tfllm  # noqa: E402
from tfllm.data.cleaning import Cleaner  # noqa: E402
from tfllm.data.corpus import iter_texts, prepare_corpus  # noqa: E402
from tfllm.data.pipeline import lm_dataset  # noqa: E402
from tfllm.schedules import WarmupCosineDecay  # noqa: E402
from tfllm.tokenizers import train_tokenizer  # noqa: E402

OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "val_loss.md")
TOKENIZERS = {"baby": "char", "small": "bpe"}
DEFAULT_STEPS = {"baby": 400, "small": 60}


def as_model_inputs(x, y):
    return {"token_ids": x, "padding_mask": keras.ops.ones_like(x)}, y


def datasets(corpus_dir, stats, name, cfg):
    tokenizer = train_tokenizer(TOKENIZERS[name], iter_texts(corpus_dir, "train"), cfg["vocab"])
    common = dict(seq_len=cfg["context"], batch_size=cfg["batch"], seed=0)
    train = lm_dataset(stats.train_files, tokenizer, shuffle=True, repeat=True, **common).map(as_model_inputs)
    val = lm_dataset(stats.val_files, tokenizer, shuffle=False, repeat=False, **common).map(as_model_inputs)
    return tokenizer, train, val.take(20).cache()


def train_and_evaluate(build, cfg, train, val, steps):
    keras.utils.set_random_seed(0)
    model = build(cfg)
    optimizer = keras.optimizers.AdamW(
        learning_rate=WarmupCosineDecay(1e-3, 1e-4, warmup_steps=steps // 10, decay_steps=steps),
        weight_decay=0.1, beta_1=0.9, beta_2=0.95, global_clipnorm=1.0,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    start = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    return float(model.evaluate(val, verbose=0, return_dict=True)["loss"]), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="training steps (default per config)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = os.path.join(tmp, "corpus")
        stats = prepare_corpus("builtin:python-docs", corpus_dir, val_fraction=0.1, seed=0, cleaner=Cleaner())
        for name in args.configs:
            cfg = CONFIGS[name]
            steps = args.steps or DEFAULT_STEPS[name]
            tokenizer, train, val = datasets(corpus_dir, stats, name, cfg)
            cfg = dict(cfg, vocab=tokenizer.vocabulary_size)
            ours, ours_s = train_and_evaluate(build_tfllm, cfg, train, val, steps)
            theirs, theirs_s = train_and_evaluate(build_kerashub, cfg, train, val, steps)
            rows.append(f"| {name} | {TOKENIZERS[name]} ({cfg['vocab']}) | {steps} | {ours:.4f} | {theirs:.4f} "
                        f"| {ours_s:.0f} s | {theirs_s:.0f} s |")
            print(rows[-1], flush=True)
    table = "\n".join([
        "| config | tokenizer (ids) | steps | tfllm val loss | kerashub val loss | tfllm time | kerashub time |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ])
    print(table)
    write_atomically(OUT_PATH, table + "\n")


if __name__ == "__main__":
    main()

"""configs/seq2seq-tiny.yaml end to end: training time, then BLEU, chrF and ROUGE of its summaries
of the held-out modules' functions against the baseline of copying each function's name.

The run trains with `tfllm train` on builtin:python-docstrings and is evaluated with
`tfllm evaluate` on its own validation split (whole modules the model never saw). The baseline
answers each function with its name, underscores as spaces ("read_config" -> "read config"),
scored on the same pairs by the same metrics.

    python bench/bench_docstrings.py                      # trains into runs/bench-seq2seq-tiny
    python bench/bench_docstrings.py --run-dir RUN        # evaluates an existing run

Writes the table to bench/out/docstrings.md.
"""

import argparse
import ast
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import write_atomically  # noqa: E402
from tfllm import cli  # noqa: E402
from tfllm.evaluation import bleu_score, chrf_score, rouge_scores  # noqa: E402
from tfllm.run import Run  # noqa: E402
from tfllm.trainers import evaluate  # noqa: E402
from tfllm.trainers.evaluate import read_references  # noqa: E402

CONFIG = "configs/seq2seq-tiny.yaml"
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "docstrings.md")


def function_name(source):
    """The name of the function defined in `source`, underscores as spaces."""
    return ast.parse(source).body[0].name.replace("_", " ").strip()


def scores(hypotheses, references):
    values = {**bleu_score(hypotheses, references), **chrf_score(hypotheses, references),
              **rouge_scores(hypotheses, references)}
    return {key: values[key] for key in ("bleu", "chrf", "rouge1", "rouge2", "rougeL")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="evaluate this run instead of training one")
    parser.add_argument("--num-beams", type=int, default=0, help="beam search with this many beams (0: greedy)")
    args = parser.parse_args()
    run_dir, seconds = args.run_dir, None
    if run_dir is None:
        run_dir = "runs/bench-seq2seq-tiny"
        if os.path.exists(run_dir):
            sys.exit(f"{run_dir} exists and `tfllm train` would resume it instead of timing a run; remove it, "
                     "or pass --run-dir to evaluate it")
        start = time.perf_counter()
        assert cli.main(["train", "--config", CONFIG, "--run-dir", run_dir]) == 0
        seconds = time.perf_counter() - start
    run = Run.open(run_dir)
    data = run.config.data.path
    decoding = {"strategy": "beam" if args.num_beams else "greedy", "max_new_tokens": run.config.model.seq_len - 1,
                "num_beams": args.num_beams or 4}
    start = time.perf_counter()
    report = evaluate.main(run_dir, data, batch_size=64, decoding=decoding)
    evaluation_seconds = time.perf_counter() - start
    sources, references, split = read_references(run, data)
    baseline = scores([function_name(source) for source in sources], references)
    model = report["metrics"]
    keys = ("bleu", "chrf", "rouge1", "rouge2", "rougeL")
    rows = [
        "| summaries of | " + " | ".join(keys) + " | reference loss | perplexity |",
        "|---|" + "---:|" * (len(keys) + 2),
        f"| {CONFIG} ({decoding['strategy']}) | " + " | ".join(f"{model[k]:.2f}" if k in ("bleu", "chrf") else
                                                            f"{model[k]:.3f}" for k in keys)
        + f" | {model['loss']:.3f} | {model['perplexity']:.1f} |",
        "| baseline: the function's name | " + " | ".join(f"{baseline[k]:.2f}" if k in ("bleu", "chrf") else
                                                         f"{baseline[k]:.3f}" for k in keys) + " | | |",
    ]
    trained = f"trained in {seconds:.0f} s; " if seconds is not None else ""
    notes = (f"{len(references)} held-out pairs ({split}); {trained}evaluated in {evaluation_seconds:.0f} s; "
             f"step {report['step']}")
    table = "\n".join(rows + ["", notes])
    print(table)
    write_atomically(OUT_PATH, table + "\n")


if __name__ == "__main__":
    main()

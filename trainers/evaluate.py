"""Evaluate a trained run on text, on prompt/reference pairs, or a classifier on labeled texts.

    tfllm evaluate --run-dir runs/gpt-tiny --data held_out.txt
    tfllm evaluate --run-dir runs/gpt-tiny --data docs.jsonl --metrics perplexity bits_per_byte
    tfllm evaluate --run-dir runs/gpt-tiny --data pairs.jsonl --max-new-tokens 32 --strategy greedy
    tfllm evaluate --run-dir runs/classify-tiny --data labeled.jsonl    # accuracy, macro-F1
    tfllm evaluate --run-dir runs/seq2seq-tiny --data pairs.jsonl       # BLEU, chrF, ROUGE, loss

Text data (.txt, .jsonl with "text", directories, globs: whatever `tfllm train` reads) gives
loss, perplexity and bits per byte over every token (see `tfllm.evaluation.TextScorer` for
exactly which tokens and bytes count). A .jsonl file whose lines hold "prompt" and
"reference" strings gives BLEU and ROUGE of the generated completions (and accuracy and
macro-F1 when asked for, reading each completion as a label), with the decoding settings in
the report. A `seq2seq` run reads pairs only ("source" and "target", or "prompt" and
"reference"; or anything `tfllm train` reads for it: .jsonl, .tsv, builtin:NAME): it gives
BLEU, chrF and ROUGE of the generated targets, and the loss and perplexity of the references
given their sources. Its own training data (`data.path`) is evaluated on the run's validation
split, the pairs it never trained on (`split` in the report). A `classify` run reads .jsonl lines with "text" and "label" (labels of its
labels.json) and gives accuracy and macro-F1 of its predicted classes, with the predictions
(text, label, predicted) in NAME.predictions.jsonl. A `masked_lm` run is not evaluated: fine-tune
it into a classifier.

The report is printed, written to RUN_DIR/eval/NAME.json (NAME: the data file's name without
its extension) with the generated completions next to it in NAME.predictions.jsonl, and
logged to TensorBoard under RUN_DIR/logs as `eval/NAME/METRIC` at the checkpoint's step.
"""

import json
import os
import re

import tensorflow as tf

from tfllm import tasks
from tfllm.callbacks.checkpointer import checkpoint_step
from tfllm.data.example import split_examples
from tfllm.data.finetune_pipeline import classify_dataset
from tfllm.data.labeled import read_classification
from tfllm.data.readers import iter_documents
from tfllm.errors import UserError
from tfllm.evaluation import (TextScorer, bleu_score, chrf_score, is_pairs_file, label_scores, read_pairs,
                              rouge_scores, score_targets)
from tfllm.generator import Generator
from tfllm.run import Run
from tfllm.trainers.generate import check_max_new_tokens, make_sampler

TEXT_METRICS = ("loss", "perplexity", "bits_per_byte")
GENERATION_METRICS = ("bleu", "chrf", "rouge", "accuracy", "macro_f1")
DEFAULT_GENERATION_METRICS = ("bleu", "rouge")
# An encoder-decoder's pairs also give the loss of its references.
REFERENCE_METRICS = ("loss", "perplexity")
DEFAULT_ENCODER_DECODER_METRICS = ("bleu", "chrf", "rouge", *REFERENCE_METRICS)
CLASSIFY_METRICS = ("accuracy", "macro_f1")


def run(args):
    decoding = {
        "strategy": args.strategy, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
        "top_k": args.top_k, "top_p": args.top_p, "num_beams": args.num_beams, "seed": args.seed,
    }
    main(args.run_dir, args.data, args.metrics, args.batch_size, decoding, precision=args.precision,
         encrypt_key_file=getattr(args, "encrypt_key_file", None))


def main(run_dir, data, metrics=None, batch_size=16, decoding=None, precision="float32", encrypt_key_file=None):
    """Evaluate the run in `run_dir` on `data` with its weights in `precision`
    (`tfllm.precision.for_decoding`; encrypted checkpoints read with `encrypt_key_file`, else
    the run's `train.encrypt_key_file`); returns the report."""
    decoding = dict(decoding or {"strategy": "greedy", "max_new_tokens": 64})
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} is invalid: use 1 or more")
    run = Run.open(run_dir, encrypt_key_file)
    task = run.task
    if not task.evaluates:
        raise UserError(
            f"{run_dir} is a {task.name} run, which tfllm evaluate does not support; it evaluates "
            f"{tasks.listed(tasks.names_of(lambda t: t.generates))} runs (text or prompt/reference data) and "
            f"{tasks.listed(tasks.names_of(lambda t: t.labeled))} runs (labeled data): try: "
            f"{task.next_step.format(run_dir=run_dir)}"
        )
    if task.labeled:
        return evaluate_classifier(run, data, metrics, batch_size, precision)
    kind = "generation" if is_pairs_file(data) or task.encoder_decoder else "text"
    metrics = check_metrics(metrics, kind, data, task.encoder_decoder)
    split = None
    if kind == "generation":
        check_max_new_tokens(decoding["max_new_tokens"])
        sampler = make_sampler(**{k: v for k, v in decoding.items() if k != "max_new_tokens"})
        prompts, references, split = read_references(run, data)
    model, checkpoint = run.load_servable_model(precision)
    config, tokenizer = run.config, run.tokenizer
    report = {"data": data, "checkpoint": checkpoint, "step": checkpoint_step(checkpoint), "kind": kind,
              "precision": precision}
    predictions = None
    if kind == "text":
        report.update(evaluate_text(model, tokenizer, config, data, metrics, batch_size))
    else:
        check_max_new_tokens(decoding["max_new_tokens"], config.max_seq_len)
        generator = Generator(model, tokenizer, max_length=config.max_seq_len)
        completions = generate_completions(generator, prompts, sampler, decoding["max_new_tokens"], batch_size)
        report["metrics"] = generation_metrics(metrics, completions, references)
        for signature in ("bleu_signature", "chrf_signature"):
            if signature in report["metrics"]:
                report[signature] = report["metrics"].pop(signature)
        if any(name in REFERENCE_METRICS for name in metrics):
            scores = score_targets(model, tokenizer, prompts, references, config.source_len, config.model.seq_len,
                                   batch_size)
            report["metrics"].update({name: scores[name] for name in REFERENCE_METRICS if name in metrics})
        report.update({"examples": len(prompts), "decoding": decoding})
        if split:
            report["split"] = split
        predictions = [{"prompt": p, "reference": r, "completion": c}
                       for p, r, c in zip(prompts, references, completions)]
    write_report(run, report_name(data), report, predictions)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def read_references(run, data):
    """`(prompts, references, split)` of generation data: a prompt/reference .jsonl file; for an
    encoder-decoder, also whatever its training reads (source/target .jsonl or .tsv, built-in
    sets), and its own training data (`data.path`) gives its validation split (`split` says so)."""
    d = run.config.data
    own_data = os.path.normpath(data) == os.path.normpath(d.path) and not d.val_path
    if not run.task.encoder_decoder or (is_pairs_file(data) and not own_data):
        return (*read_pairs(data), None)
    examples, split = run.task.read_examples(data), None
    if own_data:
        _, examples = split_examples(examples, d.val_fraction, run.config.train.seed)
        split = f"validation (data.val_fraction={d.val_fraction}, train.seed={run.config.train.seed})"
    return [source for source, _ in examples], [target for _, target in examples], split


def check_metrics(metrics, kind, data, encoder_decoder=False):
    """The metrics to report: the requested ones, each valid for this kind of data (and, for
    an encoder-decoder's pairs, the loss of the references)."""
    available = TEXT_METRICS if kind == "text" else GENERATION_METRICS + REFERENCE_METRICS * encoder_decoder
    if not metrics:
        if encoder_decoder:
            return DEFAULT_ENCODER_DECODER_METRICS
        return TEXT_METRICS if kind == "text" else DEFAULT_GENERATION_METRICS
    for name in metrics:
        if name not in TEXT_METRICS + GENERATION_METRICS:
            raise UserError(f"--metrics {name} is unknown; choose from {' '.join(TEXT_METRICS + GENERATION_METRICS)}")
        if name not in available:
            needs = ('a .jsonl file with "prompt" and "reference" strings' if kind == "text"
                     else 'text (.txt, or .jsonl with "text")')
            raise UserError(f"--metrics {name} needs {needs}; {data} holds {kind} data, which gives "
                            f"{' '.join(available)}")
    return tuple(dict.fromkeys(metrics))


def evaluate_classifier(run, data, metrics, batch_size, precision="float32"):
    """Accuracy and macro-F1 of a classify `Run` on the labeled .jsonl `data`; returns the report."""
    metrics = check_classify_metrics(metrics, run.path)
    examples = read_classification(data)
    # Checked before the model loads: a label the classifier has no class for names its line.
    true_ids = run.labels.encode([label for _, label in examples], [example.source for example in examples])
    model, checkpoint = run.load_servable_model(precision)
    texts = [text for text, _ in examples]
    predicted_ids = predict_classes(model, run.tokenizer, texts, run.config.model.seq_len, batch_size)
    # Scored as class ids, so two labels that differ only in surrounding spaces stay two classes.
    scores = label_scores([str(i) for i in predicted_ids], [str(i) for i in true_ids])
    report = {"data": data, "checkpoint": checkpoint, "step": checkpoint_step(checkpoint), "kind": "classify",
              "precision": precision, "metrics": {name: scores[name] for name in metrics}, "examples": len(examples)}
    predictions = [{"text": text, "label": label, "predicted": predicted}
                   for (text, label), predicted in zip(examples, run.labels.decode(predicted_ids))]
    write_report(run, report_name(data), report, predictions)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def check_classify_metrics(metrics, run_dir):
    """The metrics to report for a classify run: the requested ones, each one it offers."""
    if not metrics:
        return CLASSIFY_METRICS
    for name in metrics:
        if name not in CLASSIFY_METRICS:
            raise UserError(f"--metrics {name} is not offered for {run_dir}, a classify run; choose from "
                            f"{' '.join(CLASSIFY_METRICS)}")
    return tuple(dict.fromkeys(metrics))


def predict_classes(model, tokenizer, texts, seq_len, batch_size):
    """The most probable class id of every text, `batch_size` texts at a time."""
    # The end-of-text id goes where the classifier reads: first for a bidirectional backbone,
    # last for a causal one.
    dataset = classify_dataset(
        texts, [0] * len(texts), tokenizer, seq_len=seq_len, batch_size=batch_size, pooling=model.pooled_position,
        shuffle=False, seed=0, repeat=False, drop_remainder=False,
    )
    # Traced once per batch shape (a short last batch is a second one).
    classify = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32))
    return [int(i) for x, _ in dataset for i in classify(x).numpy()]


def evaluate_text(model, tokenizer, config, data, metrics, batch_size):
    """The report fields of text data: the metrics and what they were computed over."""
    scorer = TextScorer(model, tokenizer, seq_len=config.model.seq_len, batch_size=batch_size)
    scores = score_text(scorer, iter_documents(data, config.data.blank_line_documents), data)
    fields = {"metrics": {name: scores[name] for name in metrics}}
    fields.update({key: scores[key] for key in ("tokens", "bytes", "documents")})
    fields["seq_len"] = config.model.seq_len
    return fields


def generate_completions(generator, prompts, sampler, max_new_tokens, batch_size):
    """The completion of every prompt, stripped of surrounding whitespace, `batch_size` at a time."""
    completions = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        completions += [text.strip() for text in generator.generate(batch, max_new_tokens, sampler)]
    return completions


def score_text(scorer, documents, data):
    """The scorer's numbers over `documents`; `UserError` when there is none."""
    seen = []

    def texts():
        for document in documents:
            seen.append(document.source)
            yield document.text

    try:
        return scorer(texts())
    except ValueError:
        if seen:
            raise
        raise UserError(f"{data} holds no documents to evaluate; pass a file with text") from None


def generation_metrics(metrics, completions, references):
    values = {}
    if "bleu" in metrics:
        values.update(bleu_score(completions, references))
    if "chrf" in metrics:
        values.update(chrf_score(completions, references))
    if "rouge" in metrics:
        values.update(rouge_scores(completions, references))
    if "accuracy" in metrics or "macro_f1" in metrics:
        labels = label_scores(completions, references)
        values.update({name: labels[name] for name in ("accuracy", "macro_f1") if name in metrics})
    return values


def report_name(data):
    """A file name for the report of `data`: its base name without extension, made safe."""
    base = os.path.basename(os.path.normpath(data))
    base = base[: -len(".jsonl")] if base.endswith(".jsonl") else os.path.splitext(base)[0]
    return re.sub(r"[^\w.-]+", "_", base).strip("._") or "data"


def write_report(run, name, report, predictions):
    """The run's eval/NAME.json (+ NAME.predictions.jsonl), and TensorBoard `eval/NAME/METRIC`."""
    run.write_eval_report(name, report, predictions)
    writer = tf.summary.create_file_writer(run.logs_dir)
    with writer.as_default():
        for metric, value in report["metrics"].items():
            if isinstance(value, (int, float)):
                tf.summary.scalar(f"eval/{name}/{metric}", value, step=report["step"])
    writer.close()

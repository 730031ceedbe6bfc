"""`tfllm evaluate` end to end on a copy of the session's tiny trained run (`causal_lm_run`)."""

import json
import math
import os
import shutil

import numpy as np
import pytest
import sacrebleu
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tests.trainers.run_testing import CAUSAL_LM_STEPS

from tfllm import cli
from tfllm.config import load_config, save_config
from tfllm.data.finetune_pipeline import encode_classification
from tfllm.evaluation import TextScorer, rouge_scores
from tfllm.run import Run

DOCUMENTS = ["the cat sat on the mat.", "a dog ran in the park.", "café ünïcode 0123456789", "the end"]
PAIRS = [
    {"prompt": "the cat", "reference": "sat on the mat"},
    {"prompt": "a dog", "reference": "ran in the park"},
    {"prompt": "café", "reference": "ünïcode"},
]


@pytest.fixture(scope="module")
def run_dir(causal_lm_run, tmp_path_factory):
    """A copy: evaluation writes its reports and scalars into the run dir."""
    run_dir = str(tmp_path_factory.mktemp("evaluate") / "run")
    shutil.copytree(causal_lm_run, run_dir)
    return run_dir


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def evaluate(run_dir, *args):
    return cli.main(["evaluate", "--run-dir", run_dir, *args])


def eval_scalars(run_dir):
    accumulator = event_accumulator.EventAccumulator(
        Run(run_dir).logs_dir, size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"]}


def test_text_report_matches_the_scorer_and_lands_in_json_and_tensorboard(run_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "held_out.jsonl", [{"text": t} for t in DOCUMENTS])
    assert evaluate(run_dir, "--data", data, "--batch-size", "2") == 0
    printed = json.loads(capsys.readouterr().out)
    with open(os.path.join(run_dir, "eval", "held_out.json"), encoding="utf-8") as f:
        assert json.load(f) == printed
    run = Run.open(run_dir)
    config, tokenizer = run.config, run.tokenizer
    model, checkpoint = run.load_model()
    expected = TextScorer(model, tokenizer, seq_len=config.model.seq_len, batch_size=5)(DOCUMENTS)
    assert printed["kind"] == "text" and printed["checkpoint"] == checkpoint
    assert printed["step"] == CAUSAL_LM_STEPS
    assert set(printed["metrics"]) == {"loss", "perplexity", "bits_per_byte"}
    for name in printed["metrics"]:
        assert printed["metrics"][name] == pytest.approx(expected[name], rel=1e-6)
    assert printed["metrics"]["perplexity"] == pytest.approx(math.exp(printed["metrics"]["loss"]))
    assert printed["tokens"] == sum(len(t) for t in DOCUMENTS) + 4
    assert printed["bytes"] == sum(len(t.encode("utf-8")) for t in DOCUMENTS) + 4
    scalars = eval_scalars(run_dir)
    assert scalars["eval/held_out/loss"] == [(CAUSAL_LM_STEPS, pytest.approx(printed["metrics"]["loss"], rel=1e-6))]
    assert set(scalars) >= {"eval/held_out/perplexity", "eval/held_out/bits_per_byte"}


def test_a_txt_file_is_one_document_and_metrics_can_be_chosen(run_dir, tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(DOCUMENTS), encoding="utf-8")
    assert evaluate(run_dir, "--data", str(path), "--metrics", "bits_per_byte") == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["metrics"]) == ["bits_per_byte"]
    assert report["documents"] == 1 and report["bytes"] == len(path.read_bytes()) + 1


def test_prompt_reference_report_equals_the_libraries_on_the_predictions(run_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    assert evaluate(run_dir, "--data", data, "--max-new-tokens", "6", "--batch-size", "2",
                    "--metrics", "bleu", "rouge", "accuracy") == 0
    report = json.loads(capsys.readouterr().out)
    with open(os.path.join(run_dir, "eval", "pairs.predictions.jsonl"), encoding="utf-8") as f:
        predictions = [json.loads(line) for line in f]
    assert [p["prompt"] for p in predictions] == [p["prompt"] for p in PAIRS]
    hypotheses = [p["completion"] for p in predictions]
    references = [p["reference"] for p in PAIRS]
    assert report["metrics"]["bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score
    for name, value in rouge_scores(hypotheses, references).items():
        assert report["metrics"][name] == value
    assert report["metrics"]["accuracy"] == sum(h == r for h, r in zip(hypotheses, references)) / 3
    assert report["decoding"] == {"strategy": "greedy", "max_new_tokens": 6, "temperature": 1.0, "top_k": None,
                                  "top_p": None, "num_beams": 4, "seed": None}
    assert report["examples"] == 3 and "tok:13a" in report["bleu_signature"]
    assert "eval/pairs/rougeL" in eval_scalars(run_dir)


def test_sampled_evaluation_records_its_settings(run_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "sampled.jsonl", PAIRS)
    args = ["--data", data, "--strategy", "sample", "--top-k", "5", "--seed", "2", "--max-new-tokens", "4"]
    assert evaluate(run_dir, *args) == 0
    first = json.loads(capsys.readouterr().out)
    assert evaluate(run_dir, *args) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == first["metrics"]
    assert first["decoding"]["top_k"] == 5 and first["decoding"]["seed"] == 2


@pytest.mark.parametrize(
    "records, args, message",
    [
        ([PAIRS[0], {"prompt": "x"}], [], 'p.jsonl:2 has no "reference" field'),
        ([{"text": "a"}, {"txt": "b"}], [], 'p.jsonl:2 has no "text" field'),
        ([{"text": "a"}], ["--metrics", "bleu"], '--metrics bleu needs a .jsonl file with "prompt" and "reference"'),
        (PAIRS, ["--metrics", "perplexity"], "--metrics perplexity needs text"),
        (PAIRS, ["--max-new-tokens", "0"], "--max-new-tokens 0 is invalid"),
        (PAIRS, ["--strategy", "sample", "--temperature", "-1"], "--temperature -1.0 is invalid"),
        (PAIRS, ["--top-p", "2"], "--top-p 2.0 is invalid"),
        (PAIRS, ["--num-beams", "0"], "--num-beams 0 is invalid"),
        ([{"text": "a"}], ["--batch-size", "0"], "--batch-size 0 is invalid"),
    ],
)
def test_bad_input_is_a_one_line_error(run_dir, tmp_path, capsys, records, args, message):
    data = write_jsonl(tmp_path / "p.jsonl", records)
    assert evaluate(run_dir, "--data", data, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfllm evaluate: error: ") and err.count("\n") == 1 and message in err


def test_missing_data_and_missing_checkpoint(run_dir, tmp_path, capsys):
    assert evaluate(run_dir, "--data", str(tmp_path / "none.txt")) == 2
    assert "none.txt" in capsys.readouterr().err
    empty_run = str(tmp_path / "empty")
    os.makedirs(os.path.join(empty_run, "checkpoints"))
    with open(os.path.join(run_dir, "config.yaml")) as src, open(os.path.join(empty_run, "config.yaml"), "w") as dst:
        dst.write(src.read())
    assert evaluate(empty_run, "--data", write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}])) == 2
    assert "has no checkpoint under checkpoints/" in capsys.readouterr().err


# Classify runs: three classes of texts drawn from disjoint characters, which a one-layer model
# tells apart after a few dozen steps.
CLASS_CHARACTERS = ("abcde", "01234", "+-*/=")
LABELS = ["ab", "digit", "sign"]


def labeled_records(labels, per_class=24, seed=0):
    """`per_class` {"text", "label"} records of each class; class i's texts use CLASS_CHARACTERS[i]."""
    rng = np.random.default_rng(seed)
    return [{"text": "".join(rng.choice(list(characters), rng.integers(3, 12))), "label": label}
            for _ in range(per_class) for label, characters in zip(labels, CLASS_CHARACTERS)]


def train_classifier(run_dir, data):
    """A classify run trained from scratch on `data` (char tokenizer, no init_from) in seconds."""
    overrides = [
        "model.task=classify", f"data.path={data}", "data.tokenizer=char", "data.vocab_size=32",
        "model.num_layers=1", "model.num_heads=2", "model.hidden_dim=16", "model.intermediate_dim=32",
        "model.seq_len=16", "train.batch_size=8", "train.steps=30", "train.eval_every=15",
        "train.eval_batches=2", "train.log_every=15", "train.warmup_steps=2", "train.learning_rate=1e-2",
        "train.precision=float32",
    ]
    assert cli.main(["train", "--run-dir", run_dir, *overrides]) == 0
    return run_dir


def masked_lm_run(run_dir):
    """A run dir holding only the config of a masked_lm run: enough for the task checks."""
    os.makedirs(run_dir)
    save_config(load_config(None, ["model.task=masked_lm"]), Run(run_dir).config_path)
    return run_dir


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("classify")
    data = write_jsonl(directory / "train.jsonl", labeled_records(LABELS))
    return train_classifier(str(directory / "run"), data)


def reference_scores(true_ids, predicted_ids):
    """Accuracy and macro-F1 in NumPy: F1 averaged over every class seen in either list."""
    true_ids, predicted_ids = np.array(true_ids), np.array(predicted_ids)
    f1 = []
    for c in np.union1d(true_ids, predicted_ids):
        tp = np.sum((predicted_ids == c) & (true_ids == c))
        fp = np.sum((predicted_ids == c) & (true_ids != c))
        fn = np.sum((predicted_ids != c) & (true_ids == c))
        f1.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": np.mean(true_ids == predicted_ids), "macro_f1": np.mean(f1)}


def test_classify_report_equals_a_numpy_reference_on_the_models_own_predictions(classify_run, tmp_path, capsys):
    records = labeled_records(LABELS, per_class=4, seed=5)
    # Mislabeled texts, so that accuracy and macro-F1 are neither 0 nor 1 and differ.
    records += [{"text": "01234", "label": "ab"}, {"text": "abcab", "label": "sign"}, {"text": "", "label": "ab"}]
    data = write_jsonl(tmp_path / "labeled.jsonl", records)
    assert evaluate(classify_run, "--data", data, "--batch-size", "5") == 0
    report = json.loads(capsys.readouterr().out)
    with open(os.path.join(classify_run, "eval", "labeled.json"), encoding="utf-8") as f:
        assert json.load(f) == report
    run = Run.open(classify_run)
    config, tokenizer = run.config, run.tokenizer
    model, checkpoint = run.load_model()
    labels = run.labels.labels
    assert labels == LABELS
    # Trained from scratch, the backbone is causal: the end-of-text id goes last.
    x = encode_classification(tokenizer, tf.constant([r["text"] for r in records]), config.model.seq_len, "last")
    predicted = model(x, training=False).numpy().argmax(axis=1)
    expected = reference_scores([labels.index(r["label"]) for r in records], predicted)
    assert 0.5 < expected["accuracy"] < 1 and expected["macro_f1"] != pytest.approx(expected["accuracy"])
    assert report["metrics"] == {name: pytest.approx(value, abs=1e-6) for name, value in expected.items()}
    assert report["kind"] == "classify" and report["examples"] == 15 and report["checkpoint"] == checkpoint
    with open(os.path.join(classify_run, "eval", "labeled.predictions.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    assert lines == [{"text": r["text"], "label": r["label"], "predicted": labels[p]}
                     for r, p in zip(records, predicted)]
    scalars = eval_scalars(classify_run)
    assert scalars["eval/labeled/macro_f1"] == [(report["step"], pytest.approx(report["metrics"]["macro_f1"]))]


def test_classify_metrics_can_be_chosen(classify_run, tmp_path, capsys):
    data = write_jsonl(tmp_path / "few.jsonl", labeled_records(LABELS, per_class=1))
    assert evaluate(classify_run, "--data", data, "--metrics", "macro_f1") == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["metrics"]) == ["macro_f1"] and report["examples"] == 3


@pytest.mark.parametrize(
    "records, args, message",
    [
        ([{"text": "ab", "label": "ab"}, {"text": "x", "label": "spam"}], [],
         "label 'spam' at {data}:2 does not occur in the training data"),
        ([{"text": "ab", "label": 1}], [], "label 1 at {data}:1 does not occur in the training data"),
        ([{"text": "ab"}], [], '{data}:1: no "label" key'),
        ([{"text": "ab", "label": "ab"}], ["--metrics", "bleu"],
         "--metrics bleu is not offered for {run}, a classify run; choose from accuracy macro_f1"),
    ],
)
def test_bad_classify_input_is_a_one_line_error(classify_run, tmp_path, capsys, records, args, message):
    data = write_jsonl(tmp_path / "c.jsonl", records)
    assert evaluate(classify_run, "--data", data, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfllm evaluate: error: ") and err.count("\n") == 1
    assert message.format(data=data, run=classify_run) in err


def test_runs_of_other_tasks_are_one_line_errors_naming_what_is_supported(classify_run, tmp_path, capsys):
    masked = masked_lm_run(str(tmp_path / "masked"))
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}])
    cases = [
        (["evaluate", "--run-dir", masked, "--data", data],
         f"tfllm evaluate: error: {masked} is a masked_lm run, which tfllm evaluate does not support; it evaluates "
         "causal_lm, sft and seq2seq runs"),
        (["generate", "--run-dir", classify_run, "--prompt", "ab"],
         f"tfllm generate: error: {classify_run} is a classify run, which labels texts instead of generating text; "
         "tfllm generate needs a causal_lm, sft or seq2seq run"),
        (["generate", "--run-dir", masked, "--prompt", "ab"],
         f"tfllm generate: error: {masked} is a masked_lm run, which fills in masked tokens instead of generating "
         "text; tfllm generate needs a causal_lm, sft or seq2seq run"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(message) and captured.err.count("\n") == 1 and captured.out == ""


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_a_decoding_precision_is_evaluated_on_its_rounded_weights(run_dir, tmp_path, capsys, precision):
    data = write_jsonl(tmp_path / "held_out.jsonl", [{"text": t} for t in DOCUMENTS])
    assert evaluate(run_dir, "--data", data, "--batch-size", "2", "--precision", precision) == 0
    printed = json.loads(capsys.readouterr().out)
    run = Run.open(run_dir)
    model, _ = run.load_servable_model(precision)
    expected = TextScorer(model, run.tokenizer, seq_len=run.config.model.seq_len, batch_size=5)(DOCUMENTS)
    full = TextScorer(run.load_model()[0], run.tokenizer, seq_len=run.config.model.seq_len, batch_size=5)(DOCUMENTS)
    assert printed["precision"] == precision
    assert printed["metrics"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    # Rounded weights: not the float32 loss, but within a percent of it.
    assert printed["metrics"]["loss"] != full["loss"]
    assert printed["metrics"]["loss"] == pytest.approx(full["loss"], rel=1e-2)

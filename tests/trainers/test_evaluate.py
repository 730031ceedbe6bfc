"""`tfllm evaluate` end to end on a tiny run directory with random weights."""

import json
import math
import os

import pytest
import sacrebleu
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tests.trainers.test_generate import make_tiny_run

from tfllm import cli, runs
from tfllm.evaluation import TextScorer, rouge_scores

DOCUMENTS = ["the cat sat on the mat.", "a dog ran in the park.", "café ünïcode 0123456789", "the end"]
PAIRS = [
    {"prompt": "the cat", "reference": "sat on the mat"},
    {"prompt": "a dog", "reference": "ran in the park"},
    {"prompt": "café", "reference": "ünïcode"},
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_tiny_run(str(tmp_path_factory.mktemp("evaluate") / "run"))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def evaluate(run_dir, *args):
    return cli.main(["evaluate", "--run-dir", run_dir, *args])


def eval_scalars(run_dir):
    accumulator = event_accumulator.EventAccumulator(
        runs.paths(run_dir)["logs"], size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"]}


def test_text_report_matches_the_scorer_and_lands_in_json_and_tensorboard(run_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "held_out.jsonl", [{"text": t} for t in DOCUMENTS])
    assert evaluate(run_dir, "--data", data, "--batch-size", "2") == 0
    printed = json.loads(capsys.readouterr().out)
    with open(os.path.join(run_dir, "eval", "held_out.json"), encoding="utf-8") as f:
        assert json.load(f) == printed
    config, tokenizer, model, checkpoint = runs.load_run(run_dir)
    expected = TextScorer(model, tokenizer, seq_len=config.model.seq_len, batch_size=5)(DOCUMENTS)
    assert printed["kind"] == "text" and printed["checkpoint"] == checkpoint and printed["step"] == 0
    assert set(printed["metrics"]) == {"loss", "perplexity", "bits_per_byte"}
    for name in printed["metrics"]:
        assert printed["metrics"][name] == pytest.approx(expected[name], rel=1e-6)
    assert printed["metrics"]["perplexity"] == pytest.approx(math.exp(printed["metrics"]["loss"]))
    assert printed["tokens"] == sum(len(t) for t in DOCUMENTS) + 4
    assert printed["bytes"] == sum(len(t.encode("utf-8")) for t in DOCUMENTS) + 4
    scalars = eval_scalars(run_dir)
    assert scalars["eval/held_out/loss"] == [(0, pytest.approx(printed["metrics"]["loss"], rel=1e-6))]
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

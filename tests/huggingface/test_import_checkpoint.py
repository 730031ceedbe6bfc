"""`tfllm import`: a checkpoint with its own tokenizer becomes a run that generates, exports and
goes back to `transformers` with the same tokens, text and logits."""

import fnmatch
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pydoc_data.topics import topics

from tests.huggingface.conftest import torch, transformers
from tfllm import cli, lineage
from tfllm.generator import Generator
from tfllm.huggingface.tokenizer import load_checkpoint_tokenizer
from tfllm.run import Run
from tfllm.samplers import GreedySampler
from tfllm.trainers.import_checkpoint import CHECKPOINT_FILES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What GPT-2's pre-tokenizer pattern and byte-level BPE must agree on: whitespace runs before
# words (its look-ahead), tabs, newlines, digits, CJK, emoji, accents, contractions.
HARD_CASES = [
    "a  b", "a   b\n\n c", "x \n y", "  leading", "trailing   ", "tab\t\tx\t", "\n\n\nhi", "end\r\n\r\nnext",
    "don't  's 've 'S 'LL", "  's", "12 345   6789 1.5e-3", "日本語 テキスト  中文", "emoji 🎉🎉  ok 👍🏽",
    "naïve café résumé", "a\u00a0\u00a0b", "\u3000\u3000x", "a\u2028\u2028b", "x\x00y", "", " ", "   ",
    "def f(x):\n    return x  # done\n", "e\u0301 combining", "ﬁ ligature",
]
PROMPTS = ["The with statement", "def f(x):\n    return", "  two spaces", ""]


def corpus_lines():
    return [line for text in topics.values() for line in text.split("\n")]


def test_tokenizer_ids_equal_tokenizers_on_the_builtin_corpus_and_hard_cases(gpt2_checkpoint):
    directory, _, reference = gpt2_checkpoint
    tokenizer = load_checkpoint_tokenizer(directory)
    lines = HARD_CASES + corpus_lines()
    got = tokenizer.tokenize(lines).to_list()
    want = [reference(line, add_special_tokens=False)["input_ids"] for line in lines]
    wrong = [(line, g, w) for line, g, w in zip(lines, got, want) if g != w]
    assert not wrong, f"{len(wrong)} of {len(lines)} lines differ, e.g. {wrong[0]}"
    assert [b.decode("utf-8") for b in tokenizer.detokenize(got).numpy()] == lines


@pytest.fixture(scope="module")
def imported(gpt2_checkpoint, tmp_path_factory):
    directory, _, _ = gpt2_checkpoint
    run_dir = str(tmp_path_factory.mktemp("imported") / "gpt2")
    assert cli.main(["import", directory, "--run-dir", run_dir]) == 0
    return run_dir


def transformers_completions(model, tokenizer, prompts, max_new_tokens):
    completions = []
    for prompt in prompts:
        # GPT-2 puts nothing in front of a prompt; an empty one starts from <|endoftext|>.
        ids = tokenizer(prompt)["input_ids"] or [tokenizer.eos_token_id]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.eos_token_id)[0, len(ids):].tolist()
        if tokenizer.eos_token_id in out:
            out = out[: out.index(tokenizer.eos_token_id)]
        completions.append(tokenizer.decode(out))
    return completions


def test_an_imported_run_generates_the_text_of_transformers_in_process_and_exported(
        imported, gpt2_checkpoint, tmp_path):
    _, model, tokenizer = gpt2_checkpoint
    want = transformers_completions(model, tokenizer, PROMPTS, 32)
    assert len(set(want)) == len(want)
    run = Run.open(imported)
    assert (run.config.model.task, run.config.data.tokenizer) == ("causal_lm", "gpt2_bpe")
    lm, _ = run.load_model()
    assert Generator(lm, run.tokenizer, run.config.max_seq_len).generate(PROMPTS, 32, GreedySampler()) == want

    out = str(tmp_path / "export")
    assert cli.main(["export", "--run-dir", imported, "--out", out]) == 0
    assert exported_completions(os.path.join(out, "1"), PROMPTS, 32) == want


def exported_completions(version_dir, prompts, max_new_tokens):
    """Greedy completions of the SavedModel in `version_dir`, loaded in a fresh process that
    imports only TensorFlow and tensorflow-text."""
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        f"m = tf.saved_model.load({version_dir!r})\n"
        f"r = m.signatures['generate'](prompts=tf.constant({prompts!r}), "
        f"max_new_tokens=tf.constant({max_new_tokens}), temperature=tf.constant(0.0), top_k=tf.constant(0), "
        "top_p=tf.constant(1.0), seed=tf.constant(0))\n"
        "print(json.dumps([t.decode('utf-8') for t in r['text'].numpy()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_exported_back_as_a_checkpoint_transformers_loads_the_same_model_and_tokenizer(
        imported, gpt2_checkpoint, tmp_path):
    _, model, tokenizer = gpt2_checkpoint
    out = str(tmp_path / "hf")
    assert cli.main(["export", "--run-dir", imported, "--out", out, "--format", "huggingface"]) == 0
    assert_transformers_reloads(out, transformers.AutoModelForCausalLM, model, tokenizer,
                                "The with statement is a block")


def test_an_imported_run_records_its_source_and_a_signed_export_carries_that_lineage(imported, gpt2_checkpoint,
                                                                                     tmp_path):
    directory = gpt2_checkpoint[0]
    recorded = lineage.read(imported)
    read = {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
            for name in os.listdir(directory) if any(fnmatch.fnmatch(name, p) for p in CHECKPOINT_FILES)}
    assert "model.safetensors" in read and "tokenizer.json" in read
    assert recorded["source"] == {"path": directory, "directory": os.path.abspath(directory), "files": read}
    assert recorded["inputs"] is None and recorded["corpus"] is None and recorded["tokenizer"]["files"]
    assert cli.main(["verify", imported]) == 0
    assert cli.main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    out = str(tmp_path / "hf")
    assert cli.main(["export", "--run-dir", imported, "--out", out, "--format", "huggingface",
                     "--sign-key-file", str(tmp_path / "keys" / "signing_key.pem")]) == 0
    with open(os.path.join(out, "manifest.json")) as file:
        manifest = json.load(file)
    assert manifest["format"] == "huggingface" and manifest["lineage"] == recorded
    assert {"config.json", "model.safetensors", "vocab.json"} <= set(manifest["files"])
    assert cli.main(["verify", out, "--public-key", str(tmp_path / "keys" / "signing_key.pub.pem")]) == 0


def assert_transformers_reloads(out, model_class, model, tokenizer, text):
    """`transformers` loads the checkpoint `out` with the tokenizer and logits of `model` and `tokenizer`."""
    reloaded = model_class.from_pretrained(out).eval()
    reloaded_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    lines = HARD_CASES + corpus_lines()[:200]
    assert [reloaded_tokenizer(line)["input_ids"] for line in lines] == [tokenizer(line)["input_ids"] for line in lines]
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(ids).logits.numpy(), model(ids).logits.numpy(), atol=1e-4, rtol=0)


def test_an_unsupported_tokenizer_is_refused_in_one_line_and_writes_nothing(checkpoints, tmp_path, capsys):
    directory, _ = checkpoints["llama"]  # weights and config only: no tokenizer files
    run_dir = tmp_path / "run"
    assert cli.main(["import", directory, "--run-dir", str(run_dir)]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "it has no tokenizer files" in message and "GPT-2" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["no-config", "run-dir-exists", "not-a-directory"])
def test_bad_sources_are_one_line_exit_2_and_leave_no_file(case, gpt2_checkpoint, tmp_path, capsys):
    import shutil

    source = str(tmp_path / "source")
    shutil.copytree(gpt2_checkpoint[0], source)
    run_dir = tmp_path / "out" / "run"
    expected = {"no-config": "config.json", "run-dir-exists": "already exists", "not-a-directory": "not a directory"}
    if case == "no-config":
        os.remove(os.path.join(source, "config.json"))
    elif case == "run-dir-exists":
        run_dir.mkdir(parents=True)
        (run_dir / "notes.txt").write_text("mine")
    else:
        source = os.path.join(source, "config.json")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert cli.main(["import", source, "--run-dir", str(run_dir)]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and expected[case] in message and "Traceback" not in message
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


# In full, and through rank-8 adapters on the frozen checkpoint (at a learning rate that suits them).
@pytest.mark.parametrize("adapters", [[], ["train.lora_rank=8", "train.learning_rate=3e-2", "train.lora_targets=query,value,mlp"]], ids=["full", "lora"])
def test_sft_from_an_imported_checkpoint_lowers_the_validation_loss(adapters, imported, tmp_path):
    from tests.trainers.run_testing import read_metrics

    run_dir = str(tmp_path / "sft")
    overrides = ["train.init_from=" + imported, "train.steps=15", "train.eval_every=5", "train.warmup_steps=1",
                 "train.eval_batches=1", "train.batch_size=8", "train.samples=0", "train.precision=float32", *adapters]
    assert cli.main(["train", "--config", "sft-tiny", "--run-dir", run_dir, *overrides]) == 0
    assert Run.open(run_dir).config.data.tokenizer == "gpt2_bpe"  # the checkpoint's, not a new one
    val = [r["val_loss"] for r in read_metrics(run_dir) if "val_loss" in r]
    assert len(val) == 3 and val[-1] < val[0] - 0.05, val


def test_an_hf_source_is_downloaded_by_huggingface_hub_then_imported_from_its_cache(gpt2_checkpoint, tmp_path,
                                                                                    monkeypatch):
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return gpt2_checkpoint[0]  # what the download would have left in the cache

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    run_dir = str(tmp_path / "run")
    assert cli.main(["import", "hf://org/tiny-gpt2", "--run-dir", run_dir]) == 0
    assert calls[0][0] == "org/tiny-gpt2" and "*.safetensors" in calls[0][1]
    assert Run.open(run_dir).config.data.vocab_size == len(gpt2_checkpoint[2])


def test_a_failed_download_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def offline(repo_id, allow_patterns):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert cli.main(["import", "hf://org/name", "--run-dir", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "cannot download hf://org/name" in message and "hf download" in message
    assert os.listdir(tmp_path) == []


def test_bert_wordpiece_ids_equal_tokenizers_on_the_builtin_corpus_and_hard_cases(bert_checkpoint):
    directory, _, reference = bert_checkpoint
    tokenizer = load_checkpoint_tokenizer(directory)
    assert (tokenizer.kind, tokenizer.lowercase) == ("bert_wordpiece", True)
    lines = HARD_CASES + corpus_lines()
    got = tokenizer.tokenize(lines).to_list()
    want = [reference(line, add_special_tokens=False)["input_ids"] for line in lines]
    wrong = [(line, g, w) for line, g, w in zip(lines, got, want) if g != w]
    assert not wrong, f"{len(wrong)} of {len(lines)} lines differ, e.g. {wrong[0]}"


def test_classify_from_an_imported_bert_beats_the_majority_class(bert_checkpoint, tmp_path):
    import random

    from tests.trainers.run_testing import read_metrics

    pretrained = str(tmp_path / "bert")
    assert cli.main(["import", bert_checkpoint[0], "--run-dir", pretrained]) == 0
    assert Run.open(pretrained).config.model.task == "masked_lm"
    # Two classes told apart by their words, 70:30, so the majority class scores 0.7.
    rng = random.Random(0)
    words = {"code": "function class module import return value".split(),
             "prose": "the of and to in is that for".split()}
    lines = []
    for i in range(400):
        label = "code" if i % 10 < 3 else "prose"
        lines.append(json.dumps({"text": " ".join(rng.choice(words[label]) for _ in range(8)), "label": label}))
    data = tmp_path / "labeled.jsonl"
    data.write_text("\n".join(lines) + "\n")
    run_dir = str(tmp_path / "classify")
    overrides = ["train.init_from=" + pretrained, f"data.path={data}", "model.seq_len=16", "train.steps=40",
                 "train.eval_every=20", "train.eval_batches=5", "train.batch_size=16", "train.learning_rate=1e-3",
                 "train.warmup_steps=2", "train.samples=0", "train.precision=float32", "train.early_stopping_patience=0"]
    assert cli.main(["train", "--config", "classify-tiny", "--run-dir", run_dir, *overrides]) == 0
    accuracy = [r["val_accuracy"] for r in read_metrics(run_dir) if "val_accuracy" in r][-1]
    assert accuracy > 0.7 + 0.2, accuracy


def test_an_imported_bert_goes_back_to_transformers_with_its_tokenizer_and_logits(bert_checkpoint, tmp_path):
    _, model, tokenizer = bert_checkpoint
    run_dir, out = str(tmp_path / "bert"), str(tmp_path / "hf")
    assert cli.main(["import", bert_checkpoint[0], "--run-dir", run_dir]) == 0
    assert cli.main(["export", "--run-dir", run_dir, "--out", out, "--format", "huggingface"]) == 0
    assert_transformers_reloads(out, transformers.AutoModelForMaskedLM, model, tokenizer,
                                "The with statement is a [MASK] statement")


def with_a_vocabulary(directory, tmp_path):
    """A copy of the checkpoint `directory` (weights and config.json only) with a WordPiece
    vocab.txt of as many ids as its model, so that `tfllm import` takes it."""
    import shutil

    from tests.huggingface.conftest import VOCAB

    copy = tmp_path / "checkpoint"
    shutil.copytree(directory, copy)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (copy / "vocab.txt").write_text("".join(f"{t}\n" for t in special + [f"w{i}" for i in range(VOCAB - 5)]))
    return str(copy)


@pytest.mark.parametrize("name, keys", [
    ("qwen2", {"use_bias": False, "qkv_bias": True, "rope_scaling": None}),
    ("llama3", {"use_bias": False, "qkv_bias": None, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}),
])
def test_qwen2_and_llama3_checkpoints_import_into_runs_with_transformers_logits(name, keys, checkpoints, tmp_path):
    """Qwen2's query/key/value-only biases and Llama 3.1's rotary scaling are written as model keys
    of config.yaml, and the model the run builds from them has the checkpoint's logits."""
    from tests.huggingface.test_checkpoint import IDS, MASK, reference_logits

    directory, reference = checkpoints[name]
    run_dir = str(tmp_path / "run")
    assert cli.main(["import", with_a_vocabulary(directory, tmp_path), "--run-dir", run_dir]) == 0
    run = Run.open(run_dir)
    assert {key: getattr(run.config.model, key) for key in keys} == keys
    lm, _ = run.load_model()
    got = lm({"token_ids": IDS, "padding_mask": MASK}).numpy()
    real = MASK.astype(bool)
    np.testing.assert_allclose(got[real], reference_logits(reference, IDS, MASK)[real], atol=1e-4, rtol=0)


def test_an_embedding_with_more_rows_than_token_ids_imports_with_textless_extra_ids(gpt2_checkpoint, tmp_path):
    """Qwen2 rounds its 151,665 ids up to 151,936 embedding rows: the run has the rows' ids, and
    the extra ones decode to nothing."""
    directory, _, tokenizer = gpt2_checkpoint
    padded = tmp_path / "padded"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tokenizer) + 12, n_positions=64, n_embd=32, n_layer=2, n_head=4)).save_pretrained(padded)
    tokenizer.save_pretrained(padded)
    run_dir = str(tmp_path / "run")
    assert cli.main(["import", str(padded), "--run-dir", run_dir]) == 0
    run = Run.open(run_dir)
    assert run.config.data.vocab_size == run.tokenizer.vocabulary_size == len(tokenizer) + 12
    ids = tokenizer("The with statement")["input_ids"]
    assert run.tokenizer.detokenize([ids + [len(tokenizer), len(tokenizer) + 11]]).numpy()[0] == b"The with statement"
    model, _ = run.load_model()
    assert model.backbone.vocabulary_size == len(tokenizer) + 12

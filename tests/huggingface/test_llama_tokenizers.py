"""The tokenizers of Llama 3 and Qwen2 (byte-level BPE behind their own pre-tokenizer patterns)
and of Llama 2 and Mistral (SentencePiece BPE with byte fallback) give, in-graph, the ids of the
tokenizer `transformers.AutoTokenizer` loads from the same checkpoint directory, and go back to
it (tfllm/huggingface/tokenizer.py)."""

import io
import json
import os
import random
import shutil

import pytest
from pydoc_data.topics import topics

from tests.huggingface.conftest import torch, transformers
from tests.huggingface.test_import_checkpoint import HARD_CASES, corpus_lines, exported_completions
from tfllm import cli
from tfllm.errors import UserError
from tfllm.generator import Generator
from tfllm.huggingface.tokenizer import load_checkpoint_tokenizer, save_checkpoint_tokenizer
from tfllm.run import Run
from tfllm.samplers import GreedySampler
from tfllm.tokenizers import load_tokenizer
from tfllm.tokenizers.gpt2_tokenizer import PATTERNS

tokenizers = pytest.importorskip("tokenizers")
sentencepiece = pytest.importorskip("sentencepiece")

# Where the patterns' look-ahead, newline alternatives, case-insensitive contractions and digit
# groups meet whitespace runs of every kind.
MORE_CASES = [
    "!\n\n  x", "a \n\n b", "x\r\n  y", "x \r\n\r\n\ty", "  \n", "\n  \n  z", "'ſ 'S 'LL 'Ve", "1234567 ٣٤٥٦",
    "x\t\t\ty", "\u00a0\u00a0x", "a\u2028\u2028 b", "?!\n\n\n", "  ?!  ", "x  \u3000y", "café", "Å K",
    "The with statement", " statement  statement\n statement",
]
# Characters the cases above are made of, for random strings.
ALPHABET = [" ", "  ", "\n", "\r", "\t", "\u00a0", "\u3000", "\u2028", "\u0085", "\x0b", "a", "B", "é", "e\u0301",
            "日", "1", "23", "٣", "!", "'", "'s", "'LL", "ſ", "🎉", ".", "_", "\x00", "\u2000", "\u200b", "st"]


def lines():
    rng = random.Random(0)
    fuzz = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12))) for _ in range(600)]
    return HARD_CASES + MORE_CASES + corpus_lines() + fuzz


def byte_level_bpe(pattern, nfc):
    """A `tokenizers` byte-level BPE of about 400 ids trained on the built-in corpus behind
    `pattern`, NFC first when `nfc`."""
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    if nfc:
        model.normalizer = tokenizers.normalizers.NFC()
    model.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(list(topics.values()), trainer)
    return model


def save(tokenizer, directory, **settings):
    """`save_pretrained` into `directory`, with `settings` written over tokenizer_config.json."""
    tokenizer.save_pretrained(directory)
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))
    return str(directory)


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    """A Llama 3 layout: BPE with ignore_merges, its specials after the model's vocabulary, BOS by
    the post-processor, PreTrainedTokenizerFast."""
    trained = json.loads(byte_level_bpe(PATTERNS["llama3"], nfc=False).to_str())
    vocabulary = trained["model"]["vocab"]
    # A whole word the merges do not build ("Ġst atement" at best): only ignore_merges makes it one id.
    vocabulary["Ġstatement"] = len(vocabulary)
    merges = [tuple(merge) for merge in trained["model"]["merges"]]
    model = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocabulary, merges=merges, ignore_merges=True))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(PATTERNS["llama3"]), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    model.decoder = tokenizers.decoders.ByteLevel()
    model.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    start = len(vocabulary)
    model.post_processor = tokenizers.processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", start)])
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=model, bos_token="<|begin_of_text|>",
                                                   eos_token="<|end_of_text|>")
    directory = save(wrapped, tmp_path_factory.mktemp("llama3"), tokenizer_class="PreTrainedTokenizerFast")
    return directory, transformers.AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    """A Qwen2 layout: NFC, digits one by one, specials after the vocabulary, no BOS,
    Qwen2Tokenizer."""
    model = byte_level_bpe(PATTERNS["qwen2"], nfc=True)
    model.decoder = tokenizers.decoders.ByteLevel()
    model.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=model, eos_token="<|endoftext|>")
    directory = save(wrapped, tmp_path_factory.mktemp("qwen2"), tokenizer_class="Qwen2Tokenizer",
                     bos_token=None, pad_token="<|endoftext|>")
    return directory, transformers.AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def llama2(tmp_path_factory):
    """A Llama 2 layout: a SentencePiece BPE with byte fallback and Llama 2's normalizer settings
    (tokenizer.model), unk/bos/eos 0/1/2, converted and saved by LlamaTokenizerFast next to it
    (tokenizer.json)."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(topics.values()), model_writer=model, vocab_size=500, model_type="bpe",
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, max_sentence_length=100_000,
        num_threads=1, minloglevel=2)
    directory = tmp_path_factory.mktemp("llama2")
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    settings = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                "add_bos_token": True}
    (directory / "tokenizer_config.json").write_text(json.dumps(settings))
    save(transformers.LlamaTokenizerFast.from_pretrained(str(directory)), directory)
    return str(directory), transformers.AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="module")
def checkpoints(llama3, qwen2, llama2):
    return {"llama3": llama3, "qwen2": qwen2, "llama2": llama2}


@pytest.fixture(scope="module")
def imported(checkpoints):
    """family -> the tokenizer `load_checkpoint_tokenizer` makes of its checkpoint."""
    return {family: load_checkpoint_tokenizer(directory) for family, (directory, _) in checkpoints.items()}


FAMILIES = ["llama3", "qwen2", "llama2"]
KINDS = {"llama3": "llama3_bpe", "qwen2": "qwen2_bpe", "llama2": "llama_sentencepiece"}


def assert_same_ids(tokenizer, reference, texts):
    got = tokenizer.tokenize(texts).to_list()
    want = reference(texts, add_special_tokens=False)["input_ids"]
    wrong = [(text, g, w) for text, g, w in zip(texts, got, want) if g != w]
    assert not wrong, f"{len(wrong)} of {len(texts)} lines differ, e.g. {wrong[0]}"
    return got


@pytest.mark.parametrize("family", FAMILIES)
def test_ids_and_text_equal_transformers_on_the_builtin_corpus_hard_cases_and_random_strings(
        family, checkpoints, imported):
    _, reference = checkpoints[family]
    tokenizer = imported[family]
    assert tokenizer.kind == KINDS[family]
    texts = lines()
    ids = assert_same_ids(tokenizer, reference, texts)
    got = [text.decode("utf-8") for text in tokenizer.detokenize(ids).numpy()]
    want = reference.batch_decode(ids)
    wrong = [(text, g, w) for text, g, w in zip(texts, got, want) if g != w]
    assert not wrong, f"{len(wrong)} of {len(texts)} decoded lines differ, e.g. {wrong[0]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_any_ids_decode_to_the_text_of_transformers(family, checkpoints, imported):
    """Random ids (model output), byte pieces that are no UTF-8 and special tokens among them:
    SentencePiece's U+FFFD per byte of a bad run of byte pieces as `transformers`' ByteFallback,
    byte-level BPE's raw bytes as `transformers`' text once decoded with replacement."""
    _, reference = checkpoints[family]
    tokenizer = imported[family]
    rng = random.Random(0)
    ids = [[rng.randrange(tokenizer.vocabulary_size) for _ in range(rng.randint(1, 10))] for _ in range(300)]
    got = [text.decode("utf-8", "replace") for text in tokenizer.detokenize(ids).numpy()]
    assert got == reference.batch_decode(ids, skip_special_tokens=True)


def test_ignore_merges_makes_a_vocabulary_word_one_id(llama3, imported):
    directory, reference = llama3
    statement = reference.convert_tokens_to_ids("Ġstatement")
    assert imported["llama3"].tokenize(" statement").numpy().tolist() == [statement]
    # The merges alone spell it in several ids: the case tests ignore_merges.
    merged = tokenizers.Tokenizer.from_file(f"{directory}/tokenizer.json")
    merged.model = tokenizers.models.BPE(*_vocab_and_merges(merged), ignore_merges=False)
    assert len(merged.encode(" statement", add_special_tokens=False).ids) > 1


def _vocab_and_merges(backend):
    model = json.loads(backend.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


@pytest.mark.parametrize("family, start, eos", [
    ("llama3", "<|begin_of_text|>", "<|end_of_text|>"), ("qwen2", None, "<|endoftext|>"), ("llama2", "<s>", "</s>")])
def test_start_and_end_ids_are_the_checkpoints_bos_and_eos(family, start, eos, checkpoints, imported):
    _, reference = checkpoints[family]
    tokenizer = imported[family]
    assert tokenizer.eos_id == reference.convert_tokens_to_ids(eos) == reference.eos_token_id
    assert tokenizer.start_id == (None if start is None else reference.convert_tokens_to_ids(start))
    # What transformers puts in front of a text is the start id, and nothing more.
    assert reference("x")["input_ids"] == ([] if start is None else [tokenizer.start_id]) + tokenizer.tokenize(
        "x").numpy().tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_written_back_autotokenizer_loads_the_same_ids(family, checkpoints, imported, tmp_path):
    _, reference = checkpoints[family]
    save_checkpoint_tokenizer(imported[family], str(tmp_path))
    reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    texts = HARD_CASES + MORE_CASES + corpus_lines()[:1500]
    assert reloaded(texts)["input_ids"] == reference(texts)["input_ids"]
    assert (reloaded.bos_token_id, reloaded.eos_token_id) == (reference.bos_token_id, reference.eos_token_id)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_into_a_run_and_loaded_by_kind_gives_the_same_ids(family, checkpoints, imported, tmp_path):
    _, reference = checkpoints[family]
    tokenizer = imported[family]
    tokenizer.save(str(tmp_path / "tokenizer"))
    loaded = load_tokenizer(str(tmp_path / "tokenizer"))
    assert (type(loaded), loaded.kind, loaded.vocabulary_size) == (
        type(tokenizer), KINDS[family], tokenizer.vocabulary_size)
    assert (loaded.start_id, loaded.eos_id, loaded.textless_ids) == (
        tokenizer.start_id, tokenizer.eos_id, tokenizer.textless_ids)
    assert_same_ids(loaded, reference, HARD_CASES + MORE_CASES + corpus_lines()[:1500])


def test_an_unknown_split_pattern_is_refused_in_one_line_naming_the_file(llama3, tmp_path):
    copy = tmp_path / "checkpoint"
    shutil.copytree(llama3[0], copy)
    path = copy / "tokenizer.json"
    description = json.loads(path.read_text())
    split = description["pre_tokenizer"]["pretokenizers"][0]
    split["pattern"]["Regex"] = split["pattern"]["Regex"].replace(r"\p{N}{1,3}", r"\p{N}{1,4}")
    path.write_text(json.dumps(description))
    with pytest.raises(UserError) as error:
        load_checkpoint_tokenizer(str(copy))
    message = str(error.value)
    assert len(message.splitlines()) == 1 and str(path) in message and r"\\p{N}{1,4}" in message
    assert "gpt2, llama3, qwen2" in message


# (model class, config class, extra embedding rows): Llama 2 puts BOS in front of a prompt; Qwen2
# has query/key/value biases, no BOS, and an embedding rounded up past its tokenizer's ids.
MODELS = {"llama2": ("LlamaForCausalLM", "LlamaConfig", 0), "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", 12)}
PROMPTS = ["The with statement", "def f(x):\n    return", "  two spaces"]


@pytest.mark.parametrize("family", sorted(MODELS))
def test_an_imported_llama2_or_qwen2_generates_the_text_of_transformers(family, checkpoints, tmp_path):
    directory, reference = checkpoints[family]
    model_class, config_class, extra_rows = MODELS[family]
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(directory, checkpoint)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(
        vocab_size=len(reference) + extra_rows, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3)).eval()
    model.save_pretrained(checkpoint)
    run_dir = str(tmp_path / "run")
    assert cli.main(["import", str(checkpoint), "--run-dir", run_dir]) == 0

    want = []
    for prompt in PROMPTS:
        ids = reference(prompt)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=32, eos_token_id=reference.eos_token_id,
                                 pad_token_id=reference.eos_token_id)[0, len(ids):].tolist()
        want.append(reference.decode(out, skip_special_tokens=True))
    assert len(set(want)) == len(want)
    run = Run.open(run_dir)
    lm, _ = run.load_model()
    assert Generator(lm, run.tokenizer, run.config.max_seq_len).generate(PROMPTS, 32, GreedySampler()) == want
    if family == "llama2":  # its SentencePiece graph, exported, in a process with only TensorFlow
        out = str(tmp_path / "export")
        assert cli.main(["export", "--run-dir", run_dir, "--out", out]) == 0
        assert exported_completions(os.path.join(out, "1"), PROMPTS, 32) == want

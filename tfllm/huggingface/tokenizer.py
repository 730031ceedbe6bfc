"""A checkpoint's own tokenizer files as a tfllm tokenizer, and back.

Supported: GPT-2's byte-level BPE (`vocab.json` and `merges.txt`, or a `tokenizer.json` holding
the same BPE model behind GPT-2's byte-level pre-tokenizer), with the end-of-text token named by
`tokenizer_config.json` or `special_tokens_map.json` (`<|endoftext|>` when neither names one);
BERT's WordPiece (`vocab.txt`, or a `tokenizer.json` WordPiece model behind BERT's normalizer),
lower-cased when `do_lower_case` (the normalizer's `lowercase`) says so.
"""

import json
import os

from tfllm.errors import UserError
from tfllm.files import write_atomically
from tfllm.tokenizers.bert_tokenizer import BertTokenizer
from tfllm.tokenizers.byte_pair_tokenizer import MERGES_FILENAME, VOCABULARY_FILENAME, merge_strings
from tfllm.tokenizers.byte_pair_tokenizer import read_vocabulary_and_merges
from tfllm.tokenizers.gpt2_tokenizer import Gpt2Tokenizer

SUPPORTED = ("GPT-2's byte-level BPE (vocab.json and merges.txt, or tokenizer.json) and BERT's WordPiece "
             "(vocab.txt, or tokenizer.json)")
GPT2_EOS = "<|endoftext|>"


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({error}); download the checkpoint again") from None


def _token_text(value):
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _eos_token(directory):
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            token = _token_text(_read_json(path).get("eos_token"))
            if token:
                return token
    return GPT2_EOS


def _lowercase(directory, default=True):
    path = os.path.join(directory, "tokenizer_config.json")
    return bool(_read_json(path).get("do_lower_case", default)) if os.path.exists(path) else default


def _bert(vocabulary, lowercase, source):
    try:
        return BertTokenizer(vocabulary=vocabulary, lowercase=lowercase)
    except ValueError as error:
        raise UserError(f"{source}: not a BERT WordPiece vocabulary ({error})") from None


def _gpt2(directory, vocabulary, merges):
    eos = _eos_token(directory)
    if eos not in vocabulary:
        raise UserError(f"{directory}: the end-of-text token {eos!r} is not in the vocabulary")
    try:
        return Gpt2Tokenizer(vocabulary=vocabulary, merges=merges, eos_id=vocabulary[eos])
    except ValueError as error:
        raise UserError(f"{directory}: the tokenizer files are not a byte-level BPE ({error})") from None


def _from_tokenizer_json(directory, path):
    """The tokenizer of a tokenizer.json: a WordPiece model (BERT), or a BPE model behind GPT-2's
    byte-level pre-tokenizer."""
    description = _read_json(path)
    model = description.get("model") or {}
    if model.get("type") == "WordPiece":
        table = model.get("vocab", {})
        lowercase = (description.get("normalizer") or {}).get("lowercase", _lowercase(directory))
        return _bert(sorted(table, key=table.get), bool(lowercase), path)
    pre_tokenizer = description.get("pre_tokenizer") or {}
    gpt2_pre_tokenizer = pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True)
    if model.get("type") != "BPE" or not gpt2_pre_tokenizer:
        kind = f"{model.get('type')} model behind a {pre_tokenizer.get('type')} pre-tokenizer"
        raise UserError(f"{path}: a {kind} is not supported yet; supported: {SUPPORTED}")
    if pre_tokenizer.get("add_prefix_space"):
        raise UserError(f"{path}: add_prefix_space=true is not supported yet; supported: {SUPPORTED}")
    return _gpt2(directory, model.get("vocab", {}), merge_strings(model.get("merges", [])))


def load_checkpoint_tokenizer(directory):
    """The tokenizer of the checkpoint in `directory`; `UserError` naming the files when it has
    none tfllm can run in-graph exactly as `tokenizers` does."""
    def path(name):
        return os.path.join(directory, name)

    if os.path.exists(path("vocab.txt")):
        with open(path("vocab.txt"), encoding="utf-8") as file:
            vocabulary = [line.rstrip("\n") for line in file]
        return _bert(vocabulary, _lowercase(directory), path("vocab.txt"))
    if os.path.exists(path(VOCABULARY_FILENAME)) and os.path.exists(path(MERGES_FILENAME)):
        return _gpt2(directory, **read_vocabulary_and_merges(directory))
    if os.path.exists(path("tokenizer.json")):
        return _from_tokenizer_json(directory, path("tokenizer.json"))
    found = "it has tokenizer.model" if os.path.exists(path("tokenizer.model")) else "it has no tokenizer files"
    raise UserError(f"{directory}: {found}; tokenizers supported so far: {SUPPORTED}")


def writes_tokenizer(tokenizer):
    """Whether `save_checkpoint_tokenizer` can write `tokenizer`."""
    return isinstance(tokenizer, (Gpt2Tokenizer, BertTokenizer))


def save_checkpoint_tokenizer(tokenizer, directory):
    """Write `tokenizer` (a `Gpt2Tokenizer` or `BertTokenizer`) as `transformers` reads it."""
    if not writes_tokenizer(tokenizer):
        raise UserError(f"a {tokenizer.kind} tokenizer cannot be written as a checkpoint's tokenizer yet; "
                        f"supported: {SUPPORTED}")
    if isinstance(tokenizer, BertTokenizer):
        write_atomically(os.path.join(directory, "vocab.txt"), "".join(t + "\n" for t in tokenizer.vocabulary))
        settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.lowercase}
        write_atomically(os.path.join(directory, "tokenizer_config.json"), json.dumps(settings, indent=2))
        return
    tokenizer._write_files(directory)
    eos = tokenizer.id_to_token(tokenizer.eos_id)
    settings = {"tokenizer_class": "GPT2Tokenizer", "eos_token": eos, "bos_token": eos, "unk_token": eos,
                "add_prefix_space": False}
    write_atomically(os.path.join(directory, "tokenizer_config.json"), json.dumps(settings, indent=2))
    write_atomically(os.path.join(directory, "special_tokens_map.json"),
                     json.dumps({"eos_token": eos, "bos_token": eos, "unk_token": eos}, indent=2))

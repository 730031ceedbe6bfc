"""A checkpoint's own tokenizer files as a tfllm tokenizer, and back.

Supported:
- byte-level BPE (GPT-2's `vocab.json` and `merges.txt`, or a `tokenizer.json` BPE model behind
  GPT-2's ByteLevel pre-tokenizer or behind a Split with the pattern of GPT-2, Llama 3 or Qwen2
  and a ByteLevel without regex, with no normalizer or NFC), with the end-of-text token named by
  `tokenizer_config.json` or `special_tokens_map.json` (when neither names one: `<|endoftext|>`,
  else config.json's `eos_token_id`, BART's `</s>`) and the start token the post-processor's
  template puts in front (Llama 3's `<|begin_of_text|>`); BART's and RoBERTa's post-processor
  (`RobertaProcessing`, no template) gives none, so an encoder-decoder's decoder starts from
  `</s>`, as BART's does;
- SentencePiece BPE with byte fallback (`tokenizer.model`, Llama 2 and Mistral), with the ids
  `transformers`' `LlamaTokenizer` gives;
- BERT's WordPiece (`vocab.txt`, or a `tokenizer.json` WordPiece model behind BERT's normalizer),
  lower-cased when `do_lower_case` (the normalizer's `lowercase`) says so.
Special tokens written in the text are tokenized as text, but in the text of a chat template
(`Tokenizer.split_special_tokens`). The checkpoint's chat template (chat_template.jinja, else
tokenizer_config.json's `chat_template`, as `transformers` picks it) comes with its tokenizer
(`Tokenizer.chat_template`) and goes back with it.
"""

import json
import os

import sentencepiece
import tokenizers

from tfllm.data.chat import ChatTemplate
from tfllm.errors import UserError
from tfllm.files import write_atomically
from tfllm.tokenizers.bert_tokenizer import BertTokenizer
from tfllm.tokenizers.byte_pair_tokenizer import MERGES_FILENAME, VOCABULARY_FILENAME, byte_symbols, merge_strings
from tfllm.tokenizers.byte_pair_tokenizer import read_vocabulary_and_merges
from tfllm.tokenizers.gpt2_tokenizer import PATTERNS, Gpt2Tokenizer, Llama3Tokenizer, Qwen2Tokenizer
from tfllm.tokenizers.llama_sentence_piece_tokenizer import MODEL_FILENAME, LlamaSentencePieceTokenizer
from tfllm.tokenizers.tokenizer import CHAT_TEMPLATE_FILENAME

SUPPORTED = ("byte-level BPE (GPT-2's vocab.json and merges.txt, or a tokenizer.json with the pre-tokenizer of "
             "GPT-2, Llama 3 or Qwen2), SentencePiece BPE with byte fallback (tokenizer.model of Llama 2 or "
             "Mistral) and BERT's WordPiece (vocab.txt, or tokenizer.json)")
GPT2_EOS = "<|endoftext|>"
BYTE_LEVEL_BPE = {cls.pre_tokenizer: cls for cls in (Gpt2Tokenizer, Llama3Tokenizer, Qwen2Tokenizer)}
# The tokenizer classes whose tokenizer.model `LlamaSentencePieceTokenizer` runs as they do.
LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
SETTINGS_FILENAME = "tokenizer_config.json"


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({error}); download the checkpoint again") from None


def _settings(directory):
    """tokenizer_config.json of `directory` ({} when it has none)."""
    path = os.path.join(directory, SETTINGS_FILENAME)
    return _read_json(path) if os.path.exists(path) else {}


def _token_text(value):
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _eos_token(directory, default=GPT2_EOS):
    for name in (SETTINGS_FILENAME, "special_tokens_map.json"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            token = _token_text(_read_json(path).get("eos_token"))
            if token:
                return token
    return default


def _lowercase(directory, default=True):
    return bool(_settings(directory).get("do_lower_case", default))


def _bert(vocabulary, lowercase, source):
    try:
        return BertTokenizer(vocabulary=vocabulary, lowercase=lowercase)
    except ValueError as error:
        raise UserError(f"{source}: not a BERT WordPiece vocabulary ({error})") from None


def _model_eos_id(directory):
    """config.json's eos_token_id when it is one id, else None."""
    path = os.path.join(directory, "config.json")
    eos_id = _read_json(path).get("eos_token_id") if os.path.exists(path) else None
    return eos_id if isinstance(eos_id, int) else None


def _byte_level_eos_id(directory, source, vocabulary):
    """The id of the end-of-text token the tokenizer settings name; without one, of GPT-2's
    `<|endoftext|>`, else config.json's eos_token_id (BART's checkpoints ship no tokenizer
    settings, and their end of text is `</s>`)."""
    eos = _eos_token(directory)
    model_eos_id = _model_eos_id(directory)
    if eos == GPT2_EOS and eos not in vocabulary and model_eos_id in vocabulary.values():
        return model_eos_id
    if eos not in vocabulary:
        raise UserError(f"{source}: the end-of-text token {eos!r} is not in the vocabulary")
    return vocabulary[eos]


def _byte_level_bpe(directory, source, vocabulary, merges, pre_tokenizer="gpt2", **options):
    eos_id = _byte_level_eos_id(directory, source, vocabulary)
    try:
        return BYTE_LEVEL_BPE[pre_tokenizer](vocabulary=vocabulary, merges=merges, eos_id=eos_id, **options)
    except ValueError as error:
        raise UserError(f"{source}: the tokenizer files are not a byte-level BPE ({error})") from None


def _pre_tokenizer_name(path, pre_tokenizer):
    """Which of `PATTERNS` a tokenizer.json pre-tokenizer splits with; `UserError` for others."""
    pre_tokenizer = pre_tokenizer or {}
    steps = (pre_tokenizer.get("pretokenizers") or []) if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]
    types = [step.get("type") for step in steps]
    if types == ["ByteLevel"] and steps[0].get("use_regex", True):
        name, byte_level = "gpt2", steps[0]
    elif types == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        split, byte_level = steps
        regex = (split.get("pattern") or {}).get("Regex")
        names = [name for name, pattern in PATTERNS.items() if pattern == regex]
        if not names or split.get("behavior") != "Isolated" or split.get("invert"):
            raise UserError(f"{path}: the Split pre-tokenizer (pattern {split.get('pattern')!r}, behavior "
                            f"{split.get('behavior')!r}) is not supported; supported: the Isolated patterns of "
                            f"{', '.join(PATTERNS)} (tfllm.tokenizers.gpt2_tokenizer.PATTERNS)")
        name = names[0]
    else:
        raise UserError(f"{path}: a {' + '.join(map(str, types)) or 'missing'} pre-tokenizer is not supported yet; "
                        f"supported: {SUPPORTED}")
    if byte_level.get("add_prefix_space"):
        raise UserError(f"{path}: add_prefix_space=true is not supported yet; supported: {SUPPORTED}")
    return name


def _nfc(path, normalizer):
    """Whether the tokenizer.json normalizer is NFC (Qwen2's); `UserError` for any but none."""
    kind = (normalizer or {}).get("type")
    if kind not in (None, "NFC"):
        raise UserError(f"{path}: the {kind} normalizer is not supported yet; supported: none, or NFC")
    return kind == "NFC"


def _check_bpe_model(path, model):
    """`UserError` unless the BPE model's options are those of a plain byte-level BPE."""
    for key in ("byte_fallback", "dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise UserError(f"{path}: the BPE model's {key}={model[key]!r} is not supported with a byte-level "
                            "pre-tokenizer; supported: byte_fallback false, dropout, continuing_subword_prefix and "
                            "end_of_word_suffix null or empty")


def _added_tokens(path, vocabulary, added):
    """The vocabulary with tokenizer.json's `added_tokens`, and the ids of the special ones."""
    vocabulary, alphabet = dict(vocabulary), set(byte_symbols())
    for token in added:
        content, id = token.get("content"), token.get("id")
        if vocabulary.setdefault(content, id) != id:
            raise UserError(f"{path}: added token {content!r} has id {id} but the vocabulary gives it "
                            f"{vocabulary[content]}; download the checkpoint again")
        if not token.get("special") and not set(content) <= alphabet:
            raise UserError(f"{path}: the added token {content!r} is not special and not byte-level text, "
                            "which is not supported yet")
    return vocabulary, [token.get("id") for token in added if token.get("special")]


def _start_id(directory, description, token_id):
    """The id `transformers` puts in front of a text: the first special token of the template of
    tokenizer.json's post-processor when it has one (`transformers` 5 then ignores
    add_bos_token), else tokenizer_config.json's bos_token (as `token_id` maps it to an id) when
    add_bos_token is set."""
    processor = (description or {}).get("post_processor") or {}
    for step in processor.get("processors") or [processor]:
        if step.get("type") == "TemplateProcessing":
            first = (step.get("single") or [{}])[0]
            return step["special_tokens"][first["SpecialToken"]["id"]]["ids"][0] if "SpecialToken" in first else None
    settings = _settings(directory)
    return token_id(_token_text(settings.get("bos_token"))) if settings.get("add_bos_token") else None


def _from_tokenizer_json(directory, path, description):
    """The tokenizer of a tokenizer.json: a WordPiece model (BERT), or a BPE model behind a
    byte-level pre-tokenizer."""
    model = description.get("model") or {}
    if model.get("type") == "WordPiece":
        table = model.get("vocab", {})
        lowercase = (description.get("normalizer") or {}).get("lowercase", _lowercase(directory))
        return _bert(sorted(table, key=table.get), bool(lowercase), path)
    if model.get("type") != "BPE":
        raise UserError(f"{path}: a {model.get('type')} model is not supported yet; supported: {SUPPORTED}")
    pre_tokenizer = _pre_tokenizer_name(path, description.get("pre_tokenizer"))
    nfc = _nfc(path, description.get("normalizer"))
    _check_bpe_model(path, model)
    vocabulary, special_ids = _added_tokens(path, model.get("vocab", {}), description.get("added_tokens", []))

    def token_id(token):
        if token not in vocabulary:
            raise UserError(f"{path}: {SETTINGS_FILENAME}'s bos_token={token!r} is not in the vocabulary")
        return vocabulary[token]

    return _byte_level_bpe(directory, path, vocabulary, merge_strings(model.get("merges", [])), pre_tokenizer,
                           start_id=_start_id(directory, description, token_id), special_ids=special_ids,
                           nfc=nfc, ignore_merges=bool(model.get("ignore_merges")))


def _sentencepiece(directory, path, description):
    """The tokenizer of a tokenizer.model, as `transformers`' `LlamaTokenizer` runs it;
    `description` is the checkpoint's tokenizer.json, or None."""
    settings = _settings(directory)
    name = settings.get("tokenizer_class")
    if name not in (None, *LLAMA_CLASSES):
        raise UserError(f"{path}: tokenizer_config.json's tokenizer_class={name!r} is not supported with a "
                        f"tokenizer.model; supported: {', '.join(LLAMA_CLASSES)} (Llama 2, Mistral)")
    with open(path, "rb") as file:
        model_proto = file.read()
    try:
        processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
    except (RuntimeError, OSError) as error:
        raise UserError(f"{path} is not a SentencePiece model ({error}); download the checkpoint again") from None

    def piece_id(key, token):
        if token is None or processor.id_to_piece(processor.piece_to_id(token)) != token:
            raise UserError(f"{path}: {SETTINGS_FILENAME}'s {key}={token!r} is not a piece of the model")
        return processor.piece_to_id(token)

    eos_id = piece_id("eos_token", _token_text(settings.get("eos_token", "</s>")))
    start_id = _start_id(directory, description, lambda token: piece_id("bos_token", token))
    add_prefix_space = settings.get("add_prefix_space")
    try:
        return LlamaSentencePieceTokenizer(model_proto=model_proto, eos_id=eos_id, start_id=start_id,
                                           add_prefix_space=True if add_prefix_space is None else add_prefix_space)
    except ValueError as error:
        raise UserError(f"{path}: {error}; supported: {SUPPORTED}") from None


def load_checkpoint_tokenizer(directory):
    """The tokenizer of the checkpoint in `directory`, with its chat template when it has one;
    `UserError` naming the files when it has none tfllm can run in-graph exactly as
    `transformers` does."""
    tokenizer = _checkpoint_tokenizer(directory)
    tokenizer.chat_template = _chat_template(directory)
    return tokenizer


def _chat_template(directory):
    """The checkpoint's chat template as `transformers` picks it: chat_template.jinja, else
    tokenizer_config.json's `chat_template` (a string, or the one named "default" of a list of
    named templates); None without one. `UserError` when it is not a Jinja template."""
    path = os.path.join(directory, CHAT_TEMPLATE_FILENAME)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as file:
                template = file.read()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"{path} is unreadable ({error}); download the checkpoint again") from None
    else:
        path = os.path.join(directory, SETTINGS_FILENAME)
        template = _settings(directory).get("chat_template")
        if isinstance(template, list):
            named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
            if "default" not in named:
                raise UserError(f"{path}: chat_template lists templates named {sorted(map(str, named))} but none "
                                "named \"default\"; write the one to use as chat_template.jinja beside it")
            template = named["default"]
        if template is not None and not isinstance(template, str):
            raise UserError(f"{path}: chat_template is not a string; write the template as chat_template.jinja "
                            "beside it")
    if template is not None:
        ChatTemplate(template, source=path)  # refuses one that does not compile, naming the file
    return template


def _checkpoint_tokenizer(directory):
    def path(name):
        return os.path.join(directory, name)

    if os.path.exists(path("vocab.txt")):
        with open(path("vocab.txt"), encoding="utf-8") as file:
            vocabulary = [line.rstrip("\n") for line in file]
        return _bert(vocabulary, _lowercase(directory), path("vocab.txt"))
    description = _read_json(path("tokenizer.json")) if os.path.exists(path("tokenizer.json")) else None
    # Llama 2 and Mistral ship their SentencePiece model converted to a tokenizer.json BPE with
    # byte fallback as well; the model itself is what tfllm runs.
    if os.path.exists(path(MODEL_FILENAME)) and (description is None or (description.get("model") or {}).get(
            "byte_fallback")):
        return _sentencepiece(directory, path(MODEL_FILENAME), description)
    if description is not None:
        return _from_tokenizer_json(directory, path("tokenizer.json"), description)
    if os.path.exists(path(VOCABULARY_FILENAME)) and os.path.exists(path(MERGES_FILENAME)):
        name = _settings(directory).get("tokenizer_class") or ""
        if name.startswith("Qwen2"):
            raise UserError(f"{directory}: {name} needs its tokenizer.json (NFC and Qwen2's pre-tokenizer), "
                            "which is missing; download the checkpoint again")
        return _byte_level_bpe(directory, directory, **read_vocabulary_and_merges(directory))
    raise UserError(f"{directory}: it has no tokenizer files; tokenizers supported so far: {SUPPORTED}")


def writes_tokenizer(tokenizer):
    """Whether `save_checkpoint_tokenizer` can write `tokenizer`."""
    return isinstance(tokenizer, (Gpt2Tokenizer, LlamaSentencePieceTokenizer, BertTokenizer))


def save_checkpoint_tokenizer(tokenizer, directory):
    """Write `tokenizer` (a `Gpt2Tokenizer` or subclass, `LlamaSentencePieceTokenizer` or
    `BertTokenizer`) as `transformers.AutoTokenizer` reads it, with the same ids and its chat
    template."""
    if not writes_tokenizer(tokenizer):
        raise UserError(f"a {tokenizer.kind} tokenizer cannot be written as a checkpoint's tokenizer yet; "
                        f"supported: {SUPPORTED}")

    def write(name, content):
        write_atomically(os.path.join(directory, name), content)

    if tokenizer.chat_template is not None:
        write(CHAT_TEMPLATE_FILENAME, tokenizer.chat_template)

    if isinstance(tokenizer, BertTokenizer):
        write("vocab.txt", "".join(t + "\n" for t in tokenizer.vocabulary))
        write(SETTINGS_FILENAME, json.dumps({"tokenizer_class": "BertTokenizer",
                                             "do_lower_case": tokenizer.lowercase}, indent=2))
    elif isinstance(tokenizer, LlamaSentencePieceTokenizer):
        write(MODEL_FILENAME, tokenizer.model_proto)
        write(SETTINGS_FILENAME, json.dumps(_llama_settings(tokenizer), indent=2))
    elif type(tokenizer) is Gpt2Tokenizer and not (tokenizer.nfc or tokenizer.ignore_merges):
        tokenizer._write_files(directory)
        eos = tokenizer.id_to_token(tokenizer.eos_id)
        settings = {"tokenizer_class": "GPT2Tokenizer", "eos_token": eos, "bos_token": eos, "unk_token": eos,
                    "add_prefix_space": False}
        write(SETTINGS_FILENAME, json.dumps(settings, indent=2))
        write("special_tokens_map.json", json.dumps({"eos_token": eos, "bos_token": eos, "unk_token": eos}, indent=2))
    else:
        write("tokenizer.json", _tokenizer_json(tokenizer))
        start = None if tokenizer.start_id is None else tokenizer.id_to_token(tokenizer.start_id)
        write(SETTINGS_FILENAME, json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": start,
                                             "eos_token": tokenizer.id_to_token(tokenizer.eos_id),
                                             "clean_up_tokenization_spaces": False}, indent=2))


def _tokenizer_json(tokenizer):
    """A tokenizer.json that `tokenizers` runs as `tokenizer` (a `Gpt2Tokenizer`) does."""
    bpe = tokenizers.models.BPE(vocab=dict(tokenizer.vocabulary), ignore_merges=tokenizer.ignore_merges,
                                merges=[tuple(merge.split(" ")) for merge in tokenizer.merges])
    backend = tokenizers.Tokenizer(bpe)
    if tokenizer.nfc:
        backend.normalizer = tokenizers.normalizers.NFC()
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(PATTERNS[tokenizer.pre_tokenizer]), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = tokenizers.decoders.ByteLevel()
    special = sorted({*tokenizer.special_ids, tokenizer.eos_id} | ({tokenizer.start_id} - {None}))
    backend.add_special_tokens([tokenizers.AddedToken(tokenizer.id_to_token(id), special=True, normalized=False)
                                for id in special])
    if tokenizer.start_id is not None:
        start = tokenizer.id_to_token(tokenizer.start_id)
        backend.post_processor = tokenizers.processors.TemplateProcessing(
            single=f"{start} $A", pair=f"{start} $A {start}:1 $B:1", special_tokens=[(start, tokenizer.start_id)])
    return backend.to_str()


def _llama_settings(tokenizer):
    """tokenizer_config.json for `transformers`' `LlamaTokenizer` to run the SentencePiece model
    as `tokenizer` (a `LlamaSentencePieceTokenizer`) does: `legacy=False`, which transformers 4
    needs for the same dummy prefix and 5 assumes."""
    processor = tokenizer._processor
    piece = processor.id_to_piece
    bos = piece(tokenizer.start_id) if tokenizer.start_id is not None else (
        piece(processor.bos_id()) if processor.bos_id() >= 0 else None)
    return {"tokenizer_class": "LlamaTokenizer", "bos_token": bos, "eos_token": piece(tokenizer.eos_id),
            "unk_token": piece(processor.unk_id()) if processor.unk_id() >= 0 else None,
            "add_bos_token": tokenizer.start_id is not None, "add_eos_token": False, "legacy": False,
            "add_prefix_space": tokenizer.add_prefix_space, "clean_up_tokenization_spaces": False}

"""Chat data (tfllm/data/chat.py, the chat pieces of tfllm/data/finetune_pipeline.py): templates
render as `transformers`' `apply_chat_template`, rendered chats tokenize to its ids (special
tokens as their ids), and the loss weighs exactly what its assistant mask marks.

The references are tiny tokenizers in the layouts of Qwen2 and Llama 3 (byte-level BPE trained
by `tokenizers` on the conversations below) and Mistral (SentencePiece with byte fallback),
saved by `transformers` with real templates of those families, no network."""

import io
import json

import numpy as np
import pytest

from tfllm.data.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplate, Conversation
from tfllm.data.example import Example
from tfllm.data.finetune_pipeline import (chat_pieces, encode_with_special_tokens, end_of_turn_id, pieces_dataset,
                                          sft_pieces)
from tfllm.data.labeled import read_prompt_completion
from tfllm.errors import UserError
from tfllm.huggingface.tokenizer import load_checkpoint_tokenizer, save_checkpoint_tokenizer
from tfllm.tokenizers import load_tokenizer, train_tokenizer
from tfllm.tokenizers.gpt2_tokenizer import PATTERNS

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
sentencepiece = pytest.importorskip("sentencepiece")

# Qwen2.5-Instruct's template (its tools branch left out): `{%-` trimming, a default system
# prompt, `tojson`, `<|im_end|>` ending each turn and a newline after it.
QWEN2 = r"""{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
# Meta-Llama-3-8B-Instruct's template: the BOS variable, `trim`, no newline after `<|eot_id|>`.
LLAMA3 = (r"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          r"'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          r"'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          r"{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>"
          r"\n\n' }}{% endif %}")
# Mistral-7B-Instruct-v0.1's: text right after `<s>` and `</s>`, roles checked by raise_exception.
MISTRAL = (r"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) "
           r"%}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           r"{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif "
           r"message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception("
           r"'Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
# HuggingFaceH4/zephyr-7b-beta's: a block per line, whose line ends only `trim_blocks` removes.
ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
          "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}"
          "\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
          "{% endfor %}")
# The same templates with TRL's `{% generation %}` marks around what an assistant turn learns
# (its content and end-of-turn token): `transformers`' assistant mask, the loss weights' reference.
MARKED = {
    "qwen2": QWEN2.replace(
        r"""{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}""",
        r"""{{- '<|im_start|>' + message.role + '\n' }}{% generation %}{{- message.content + '<|im_end|>' }}"""
        r"""{% endgeneration %}{{- '\n' }}"""),
    "llama3": LLAMA3.replace(
        r"{{ content }}{% endfor %}",
        r"{% if message['role'] == 'assistant' %}{{ content[:-(message['content'] | trim | length) - 10] }}"
        r"{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}{% else %}"
        r"{{ content }}{% endif %}{% endfor %}"),
    "mistral": MISTRAL.replace(r"{{ message['content'] + eos_token}}",
                               r"{% generation %}{{ message['content'] + eos_token}}{% endgeneration %}"),
}

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"},
     {"role": "assistant", "content": " Green, or red. "}],
]
ALTERNATING = [CONVERSATIONS[0], CONVERSATIONS[1][1:]]  # Mistral's template has no system role
WORDS = [message["content"] for conversation in CONVERSATIONS for message in conversation] + [
    "system user assistant You are Qwen, created by Alibaba Cloud. You are a helpful assistant. [INST] [/INST]"]


def byte_level(pattern, specials):
    """A `tokenizers` byte-level BPE of 300 ids behind `pattern`, trained on the conversations, with
    `specials` as its special added tokens."""
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    model.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, show_progress=False, special_tokens=specials,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(WORDS * 3, trainer)
    return model


def saved(wrapped, directory, template, in_config=False, **settings):
    """`wrapped` saved by `transformers` into `directory` with `template` as its chat template
    (chat_template.jinja, or tokenizer_config.json's `chat_template` when `in_config`) and
    `settings` over tokenizer_config.json; returns `(directory, AutoTokenizer of it)`."""
    wrapped.save_pretrained(directory)
    path = directory / "tokenizer_config.json"
    config = {**json.loads(path.read_text()), **settings}
    if in_config:
        config["chat_template"] = [{"name": "default", "template": template}, {"name": "rag", "template": "x"}]
    else:
        (directory / "chat_template.jinja").write_text(template)
    path.write_text(json.dumps(config))
    return str(directory), transformers.AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """family -> (checkpoint directory, `transformers` tokenizer with the family's real template)."""
    qwen2 = byte_level(PATTERNS["qwen2"], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    qwen2.normalizer = tokenizers.normalizers.NFC()
    llama3 = byte_level(PATTERNS["llama3"], ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                             "<|end_header_id|>", "<|eot_id|>"])
    llama3.post_processor = tokenizers.processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", llama3.token_to_id("<|begin_of_text|>"))])
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(WORDS * 20), model_writer=model, vocab_size=300, model_type="bpe", byte_fallback=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2, hard_vocab_limit=False)
    mistral = tmp_path_factory.mktemp("mistral")
    (mistral / "tokenizer.model").write_bytes(model.getvalue())
    (mistral / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True}))
    return {
        "qwen2": saved(transformers.PreTrainedTokenizerFast(tokenizer_object=qwen2, eos_token="<|im_end|>",
                                                            pad_token="<|endoftext|>"),
                       tmp_path_factory.mktemp("qwen2"), QWEN2, tokenizer_class="Qwen2Tokenizer", bos_token=None),
        "llama3": saved(transformers.PreTrainedTokenizerFast(tokenizer_object=llama3, bos_token="<|begin_of_text|>",
                                                             eos_token="<|eot_id|>"),
                        tmp_path_factory.mktemp("llama3"), LLAMA3, in_config=True),
        "mistral": saved(transformers.LlamaTokenizerFast.from_pretrained(str(mistral)), mistral, MISTRAL),
    }


@pytest.fixture(scope="module")
def imported(references):
    """family -> the tokenizer `tfllm import` makes of the checkpoint, its chat template included."""
    return {family: load_checkpoint_tokenizer(directory) for family, (directory, _) in references.items()}


FAMILIES = ["qwen2", "llama3", "mistral"]


def conversations(family):
    return ALTERNATING if family == "mistral" else CONVERSATIONS


def prefixes(conversation):
    return [conversation[:end] for end in range(1, len(conversation) + 1)]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_checkpoint_template_renders_as_apply_chat_template(family, references, imported):
    _, reference = references[family]
    template = ChatTemplate.of(imported[family])
    assert imported[family].chat_template == {"qwen2": QWEN2, "llama3": LLAMA3, "mistral": MISTRAL}[family]
    for messages in (prefix for conversation in conversations(family) for prefix in prefixes(conversation)):
        for generation_prompt in (False, True):
            want = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
            assert template.render(messages, add_generation_prompt=generation_prompt) == want
    # The marked templates render the same text.
    marked = ChatTemplate(MARKED[family], template.special_tokens)
    assert all(marked.render(c) == template.render(c) for c in conversations(family))


def test_block_lines_render_as_apply_chat_template(references, imported):
    _, reference = references["qwen2"]
    template = ChatTemplate(ZEPHYR, ChatTemplate.of(imported["qwen2"]).special_tokens)
    for conversation in CONVERSATIONS:
        for generation_prompt in (False, True):
            want = reference.apply_chat_template(conversation, chat_template=ZEPHYR, tokenize=False,
                                                 add_generation_prompt=generation_prompt)
            assert template.render(conversation, add_generation_prompt=generation_prompt) == want
    assert template.render(CONVERSATIONS[0]) == "<|user|>\nWhat is 2+2?<|im_end|>\n<|assistant|>\n4<|im_end|>\n"


@pytest.mark.parametrize("family", FAMILIES)
def test_special_tokens_written_by_the_template_are_their_ids(family, references, imported):
    _, reference = references[family]
    tokenizer = imported[family]
    for conversation in conversations(family):
        text = reference.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        want = reference(text, add_special_tokens=False)["input_ids"]
        assert encode_with_special_tokens(tokenizer, [text]) == [want]
        # The special tokens are there as single ids, and plain tokenizing would spell them out.
        specials = set(tokenizer.special_tokens.values())
        assert sum(id in specials for id in want) >= 2
        assert tokenizer.tokenize([text]).to_list()[0] != want


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_weighs_exactly_the_assistant_turns_transformers_marks(family, references, imported):
    """The weights are `transformers`' assistant mask of the template marked as TRL marks it (each
    assistant turn's content and end-of-turn token), on multi-turn conversations; the ids are
    those of `apply_chat_template`."""
    _, reference = references[family]
    tokenizer = imported[family]
    examples = [Example(Conversation(conversation), None, f"chat.jsonl:{line}")
                for line, conversation in enumerate(conversations(family), start=1)]
    pieces = sft_pieces(examples, tokenizer, ChatTemplate.of(tokenizer))
    batch = next(iter(pieces_dataset(pieces, tokenizer, seq_len=96, batch_size=len(pieces), shuffle=False, seed=0,
                                     repeat=False)))
    x, y, weights = (np.asarray(tensor) for tensor in (batch[0]["token_ids"], batch[1], batch[2]))
    for row, conversation in enumerate(conversations(family)):
        want = reference.apply_chat_template(conversation, chat_template=MARKED[family], return_dict=True,
                                             return_assistant_tokens_mask=True)
        ids, mask = want["input_ids"], want["assistant_masks"]
        assert sum(mask) > 0 and len(ids) <= 97
        np.testing.assert_array_equal(x[row, : len(ids) - 1], ids[:-1])
        np.testing.assert_array_equal(y[row, : len(ids) - 1], ids[1:])
        np.testing.assert_array_equal(weights[row], np.pad(mask[1:], (0, 96 - len(ids) + 1)).astype(np.float32))


def test_an_assistant_message_weighted_0_is_context(imported):
    tokenizer = imported["qwen2"]
    first, second = (message for message in CONVERSATIONS[1] if message["role"] == "assistant")
    conversation = Conversation([{**message, "weight": 0} if message is first else message
                                 for message in CONVERSATIONS[1]])
    segments = ChatTemplate.of(tokenizer).segments(conversation, "chat.jsonl:1")
    assert [text for text, learned in segments if learned] == [second["content"] + "<|im_end|>\n"]
    assert "".join(text for text, _ in segments) == ChatTemplate.of(tokenizer).render(conversation)


def test_the_default_template_and_what_it_learns():
    """A run without a template (tfllm's tokenizers, GPT-2) renders role lines and its end-of-text
    token after each turn; the assistant learns its text and that token, not the newline."""
    tokenizer = train_tokenizer("char", WORDS, vocab_size=64)
    assert tokenizer.chat_template is None
    template = ChatTemplate.of(tokenizer)
    assert template.template == DEFAULT_CHAT_TEMPLATE
    text = template.render(CONVERSATIONS[0], add_generation_prompt=False)
    prompt = "<eos><|user|>\nWhat is 2+2?<eos>\n<|assistant|>\n"
    assert text == prompt + "4<eos>\n"
    assert template.render(CONVERSATIONS[0][:1], add_generation_prompt=True) == prompt
    pieces = chat_pieces(template.segments(Conversation(CONVERSATIONS[0]), "chat.jsonl:1"), tokenizer)
    assert [(piece.text, piece.token_id) for piece in pieces if piece.weight] == [("4", -1), ("", 1)]
    assert "".join(piece.text or tokenizer.id_to_token(piece.token_id) for piece in pieces) == text
    assert end_of_turn_id(template, tokenizer) == tokenizer.eos_id
    assert tokenizer.split_special_tokens("<eos>a<pad><eos>") == [1, "a", 0, 1]


def test_a_template_that_renders_turns_otherwise_in_context_is_refused(imported):
    # The last message is rendered differently from the same message earlier (as Qwen3 drops the
    # reasoning of earlier turns): the beginning of the text changes as the conversation grows.
    template = ChatTemplate("{% for m in messages %}{{ 'LAST: ' if loop.last else '' }}{{ m['content'] }}\n"
                            "{% endfor %}")
    with pytest.raises(UserError, match=r"^chat\.jsonl:7: the chat template does not render the conversation turn "
                                        r"by turn \(its text for messages 1-2 does not start with its text for "
                                        r"message 1 and an assistant prompt\).*use a template") as error:
        template.segments(Conversation(CONVERSATIONS[0]), "chat.jsonl:7")
    assert "\n" not in str(error.value)


def test_a_conversation_the_template_refuses_names_its_line(imported):
    template = ChatTemplate.of(imported["mistral"])
    with pytest.raises(UserError, match=r"^chat\.jsonl:2: the run's tokenizer/chat_template\.jinja refuses the "
                                        r"conversation \(Conversation roles must alternate user/assistant/"):
        template.segments(Conversation(CONVERSATIONS[1]), "chat.jsonl:2")


def test_end_of_turn_is_the_token_that_closes_an_assistant_turn(imported):
    assert {family: tokenizer.id_to_token(end_of_turn_id(ChatTemplate.of(tokenizer), tokenizer))
            for family, tokenizer in imported.items()} == {"qwen2": "<|im_end|>", "llama3": "<|eot_id|>",
                                                           "mistral": "</s>"}


def test_the_template_goes_with_the_tokenizer_and_back_to_a_checkpoint(imported, tmp_path):
    tokenizer = imported["llama3"]
    tokenizer.save(tmp_path / "tokenizer")
    assert (tmp_path / "tokenizer" / "chat_template.jinja").read_text() == LLAMA3
    assert load_tokenizer(tmp_path / "tokenizer").chat_template == LLAMA3
    (tmp_path / "hf").mkdir()
    save_checkpoint_tokenizer(tokenizer, str(tmp_path / "hf"))
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf")).chat_template == LLAMA3


def test_a_checkpoint_template_that_does_not_compile_names_its_file(references, tmp_path):
    directory, _ = references["qwen2"]
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_text(open(f"{directory}/{name}", encoding="utf-8").read())
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }")
    with pytest.raises(UserError, match=f"^{tmp_path}/chat_template.jinja is not a Jinja template \\(line 1: "):
        load_checkpoint_tokenizer(str(tmp_path))


def write_lines(path, *records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def test_chat_and_prompt_completion_lines_mix(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", {"prompt": "1+1=", "completion": "2"},
                       {"messages": CONVERSATIONS[0], "id": 3}, "")
    pair, chat = read_prompt_completion(path)
    assert pair == ("1+1=", "2") and chat.source == f"{path}:2"
    assert isinstance(chat[0], Conversation) and list(chat[0]) == CONVERSATIONS[0] and chat[1] is None


HI = {"role": "user", "content": "Hi"}
HELLO = {"role": "assistant", "content": "Hello"}


@pytest.mark.parametrize("line, message", [
    ({"messages": "Hi"}, '"messages" is a string "Hi"; write the conversation as an array of messages, like [{'),
    ({"messages": []}, '"messages" is an empty array; write the conversation as an array'),
    ({"messages": [HI, "Hello"]}, 'message 2 is a string "Hello"; a message is an object like {"role": "user"'),
    ({"messages": [HI, {"content": "Hello"}]}, 'message 2 has no "role" key; every message needs "role" and '
                                               '"content"'),
    ({"messages": [HI, {"role": "bot", "content": "x"}]}, 'message 2 has "role" "bot"; a role is "system", "user" '
                                                          'or "assistant"'),
    ({"messages": [HI, {"role": "assistant", "content": None}]}, 'message 2: "content" is null; it must be a string'),
    ({"messages": [HI, {"role": "assistant", "content": [{"type": "text", "text": "x"}]}]},
     'message 2: "content" is an array'),
    ({"messages": [HI]}, 'no assistant message to learn; a conversation needs one with "role": "assistant" and no '
                         '"weight": 0'),
    ({"messages": [HI, {**HELLO, "weight": 0}]}, "no assistant message to learn"),
    ({"messages": [{**HI, "weight": 1}, HELLO]}, 'message 1 has "weight" 1; only an assistant message has a weight'),
    ({"messages": [HI, {**HELLO, "weight": 0.5}]}, 'message 2 has "weight" 0.5; only an assistant message'),
    ({"messages": [HI, HELLO], "prompt": "p"}, '"messages" and "prompt" on one line; a line is a conversation or'),
    ({"text": "x"}, 'no "prompt" key; every line needs "prompt" and "completion", or "messages".'),
    ('{"messages": [', 'not valid JSON (', ),
])
def test_each_bad_chat_line_is_one_error_naming_file_line_and_key(tmp_path, line, message):
    path = write_lines(tmp_path / "chat.jsonl", {"messages": [HI, HELLO]}, line)
    with pytest.raises(UserError) as error:
        read_prompt_completion(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)

"""Chat examples and the chat template that turns them into the text a model reads.

An `sft` line `{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}`
(the OpenAI and Hugging Face chat format; `tfllm.data.labeled` reads and checks it) is a
`Conversation`. `ChatTemplate` renders it with the run's chat template: the Jinja string an
imported checkpoint ships (`tokenizer_config.json`'s `chat_template`, or `chat_template.jinja`),
kept in the run's tokenizer/ as `chat_template.jinja`, and rendered as `transformers`'
`apply_chat_template` renders it; a run without one uses `DEFAULT_CHAT_TEMPLATE`.
`ChatTemplate.segments` cuts a rendered conversation into what the model learns to write (each
assistant turn) and the rest, from renders of the conversation's beginnings.
"""

import datetime
import json

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tfllm.errors import UserError

ROLES = ("system", "user", "assistant")
# The template of a run whose tokenizer has none (tfllm's own tokenizers, GPT-2): the start token
# when the tokenizer has one, then each turn as a role marker line, the text and the end-of-text
# token; an assistant turn learns its text and that end-of-text token, where generation stops.
#   <eos><|user|>\nWhat is 2+2?<eos>\n<|assistant|>\n4<eos>\n
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + (eos_token or '') + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


class Conversation(tuple):
    """The messages of one chat example, in order: dicts with a "role" of `ROLES` and a "content"
    string, and any other keys of the line's messages (the template sees them all). An assistant
    message with `"weight": 0` (OpenAI's fine-tuning format) is context, not learned.

    Example:

    >>> chat = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    >>> chat.learned(1), chat.texts()
    (True, ['Hi', 'Hello'])
    """

    def learned(self, index: int) -> bool:
        """Whether the model learns to write message `index`: an assistant message not weighted 0."""
        message = self[index]
        return message["role"] == "assistant" and message.get("weight", 1) != 0

    def texts(self) -> list:
        """The messages' contents (text a tokenizer trained for the run reads)."""
        return [message["content"] for message in self]


class ChatTemplate:
    """A chat template compiled and rendered as `transformers`' `apply_chat_template` does.

    The Jinja environment is `transformers`': sandboxed and immutable, `trim_blocks` and
    `lstrip_blocks`, the `raise_exception` and `strftime_now` globals, its `tojson`, loop controls,
    and `{% generation %}` blocks (rendered as they are). A render sees `messages`,
    `add_generation_prompt`, `tools` and `documents` (None) and the tokenizer's special tokens.

    Args:
        template: str, the Jinja source.
        special_tokens: dict of variable name (`bos_token`, `eos_token`, ...) -> token text.
        source: str, where the template comes from, for errors.

    Example:
    ```python
    template = ChatTemplate.of(run.tokenizer)
    template.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    template.segments(conversation, "chat.jsonl:3")  # [(text, learned), ...]
    ```
    """

    def __init__(self, template: str, special_tokens=None, source: str = "the chat template"):
        self.template = template
        self.special_tokens = dict(special_tokens or {})
        self.source = source
        try:
            self._compiled = _ENVIRONMENT.from_string(template)
        except jinja2.TemplateSyntaxError as error:
            raise UserError(f"{source} is not a Jinja template (line {error.lineno}: {error.message}); fix it "
                            "(a run without chat_template.jinja in its tokenizer/ uses the default template)") from None

    @classmethod
    def of(cls, tokenizer) -> "ChatTemplate":
        """The template of `tokenizer` (`Tokenizer.chat_template`, else `DEFAULT_CHAT_TEMPLATE`), with
        its start, end-of-text, padding and mask tokens as `bos_token`, `eos_token`, `pad_token`
        and `mask_token` (those it has)."""
        ids = {"bos_token": tokenizer.start_id, "eos_token": tokenizer.eos_id, "pad_token": tokenizer.pad_id,
               "mask_token": tokenizer.mask_id}
        tokens = {name: tokenizer.id_to_token(id) for name, id in ids.items() if id is not None}
        if tokenizer.chat_template is None:
            return cls(DEFAULT_CHAT_TEMPLATE, tokens, "the default chat template")
        return cls(tokenizer.chat_template, tokens, "the run's tokenizer/chat_template.jinja")

    def render(self, messages, add_generation_prompt: bool = False, where: str = "a conversation") -> str:
        """The text of `messages` (dicts; keys whose value is None are dropped, as `transformers`
        drops them); `add_generation_prompt` ends it with the start of an assistant turn.

        Raises:
            UserError: naming `where` (`FILE:LINE`) when the template refuses the messages (its
                `raise_exception`, or an operation that fails on them).
        """
        messages = [{key: value for key, value in message.items() if value is not None} for message in messages]
        try:
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, tools=None,
                                         documents=None, **self.special_tokens)
        except (jinja2.TemplateError, TypeError, ValueError, LookupError) as error:
            problem = error.message if isinstance(error, jinja2.TemplateError) and error.message else str(error)
            raise UserError(f"{where}: {self.source} refuses the conversation ({problem}); fix the conversation or "
                            "the template") from None

    def segments(self, conversation: Conversation, where: str) -> list:
        """`[(text, learned), ...]`: the rendered `conversation` cut into the text of each learned
        assistant turn (`learned` True) and the text around them, which join into the whole.

        A learned turn's text is what the conversation up to it adds to the conversation before
        it with the generation prompt: its content and what the template writes after it (its
        end-of-turn token and, say, a newline; `tfllm.data.finetune_pipeline.chat_pieces` leaves
        what follows the last special token unlearned).

        Raises:
            UserError: naming `where` (`FILE:LINE`) when the template refuses the conversation,
                writes nothing for a learned turn, or renders a beginning of the conversation as
                text the whole does not start with (its turns cannot be told apart then).
        """
        # (messages rendered, with the generation prompt, whether the text it adds is a learned turn)
        renders = [render for i in range(len(conversation)) if conversation.learned(i)
                   for render in ((i, True, False), (i + 1, False, True))] + [(len(conversation), False, False)]
        segments, done, done_what = [], "", "no message"
        for count, generation_prompt, learned in renders:
            text = self.render(conversation[:count], generation_prompt, where)
            what = ("no message" if count == 0 else f"message{'s 1-' if count > 1 else ' '}{count}"
                    ) + " and an assistant prompt" * generation_prompt
            if not text.startswith(done):
                raise UserError(
                    f"{where}: {self.source} does not render the conversation turn by turn (its text for {what} does "
                    f"not start with its text for {done_what}), so the assistant turns cannot be told apart for the "
                    "loss; use a template whose text for a conversation starts with its text for the conversation's "
                    "beginning")
            if learned and len(text) == len(done):
                raise UserError(f"{where}: {self.source} writes nothing for message {count} (an assistant turn), "
                                "so there is nothing to learn from it; check the message and the template")
            segments.append((text[len(done):], learned))
            done, done_what = text, what
        return [(text, learned) for text, learned in segments if text]


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(format):
    return datetime.datetime.now().strftime(format)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters; `transformers` writes plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`, the mark of assistant text that templates written
    for `transformers`' `return_assistant_tokens_mask` carry: rendered as its body is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


_ENVIRONMENT = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                             extensions=[_Generation, jinja2.ext.loopcontrols])
_ENVIRONMENT.filters["tojson"] = _tojson
_ENVIRONMENT.globals["raise_exception"] = _raise_exception
_ENVIRONMENT.globals["strftime_now"] = _strftime_now

"""Text samples and helpers shared by the tokenizer tests."""

from pydoc_data.topics import topics

# Accents, CJK, emoji (with a skin-tone modifier), tabs, newlines, CRLF, runs
# of spaces, code indentation, non-breaking and ideographic spaces.
UNICODE_TEXTS = [
    "naïve café, Ünïcödé àccents — «quoted»",
    "日本語のテキスト and 中文，标点。",
    "emoji 🎉👍🏽 mixed with text",
    "tabs\tand\nnewlines\n\n\r\nend",
    "runs  of   spaces    and trailing    ",
    "    def f(x):\n        return x  # comment\n",
    "no\xa0break\u3000ideographic\u2009thin",
]
# Python's own documentation, sorted by topic so the sample never changes.
CORPUS = [topics[key] for key in sorted(topics)[:12]]
TRAIN_TEXTS = CORPUS + UNICODE_TEXTS * 3
VOCAB_SIZES = {"char": 256, "wordpiece": 400, "bpe": 400, "sentencepiece": 500}


def ids_of(tokenizer, texts):
    """Python lists of ids, one per text."""
    return tokenizer.tokenize(texts).to_list()


def strings_of(tokenizer, ids):
    """Detokenized texts as Python str."""
    return [text.decode("utf-8") for text in tokenizer.detokenize(ids).numpy().tolist()]

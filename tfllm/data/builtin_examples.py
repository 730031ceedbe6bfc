"""Labeled example sets built from the built-in corpora, so fine-tuning runs need no download.

`builtin:stdlib-packages` (classification): passages of about 12 lines of the standard library's
source, labeled by the package they come from (asyncio, email, tkinter, xml, multiprocessing),
at most `PASSAGES_PER_PACKAGE` per package so the classes are balanced.

`builtin:python-docs-topics` (prompt -> completion): the prompt names a help topic of CPython's
documentation ("Python help topic: assert\\n"), the completion is the topic's first paragraph.
"""

import os
import sysconfig

from tfllm.data.builtin import PREFIX, stdlib_source_files
from tfllm.data.example import Example
from tfllm.errors import UserError

CLASSIFICATION_SETS = ("stdlib-packages",)
PROMPT_COMPLETION_SETS = ("python-docs-topics",)
PACKAGES = ("asyncio", "email", "tkinter", "xml", "multiprocessing")
LINES_PER_PASSAGE = 12
PASSAGES_PER_PACKAGE = 300
_MIN_PASSAGE_CHARS = 200
_MAX_COMPLETION_CHARS = 300


def builtin_examples(path, kind):
    """The `Example`s of the built-in set `path` (`builtin:NAME`); `kind` is "classify" or "sft"."""
    name = path[len(PREFIX):]
    sets = CLASSIFICATION_SETS if kind == "classify" else PROMPT_COMPLETION_SETS
    if name not in sets:
        valid = ", ".join(PREFIX + n for n in sets)
        raise UserError(f"{path} is not a built-in {kind} set; use one of: {valid}, or a .jsonl file")
    pairs = _stdlib_passages() if name == "stdlib-packages" else _docs_topics()
    return [Example(first, second, f"{path}:{i + 1}") for i, (first, second) in enumerate(pairs)]


def _stdlib_passages():
    root = sysconfig.get_paths()["stdlib"]
    by_package = {package: [] for package in PACKAGES}
    for relative in stdlib_source_files():
        package = relative.split(os.sep)[0]
        if package not in by_package:
            continue
        with open(os.path.join(root, relative), encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        for start in range(0, len(lines), LINES_PER_PASSAGE):
            passage = "\n".join(lines[start : start + LINES_PER_PASSAGE])
            if len(passage) >= _MIN_PASSAGE_CHARS:
                by_package[package].append(passage)
    pairs = []
    for package, passages in by_package.items():
        # Every k-th passage: a spread over all of the package's files, not its first few.
        step = max(1, len(passages) // PASSAGES_PER_PACKAGE)
        pairs += [(passage, package) for passage in passages[::step][:PASSAGES_PER_PACKAGE]]
    return pairs


def _docs_topics():
    from pydoc_data.topics import topics

    pairs = []
    for topic in sorted(topics):
        paragraphs = [p.strip() for p in topics[topic].split("\n\n") if p.strip()]
        # The first paragraph is the title underlined; the text starts after it.
        body = next((p for p in paragraphs[1:] if len(p) > 40), None)
        if body:
            pairs.append((f"Python help topic: {topic}\n", " ".join(body.split())[:_MAX_COMPLETION_CHARS]))
    return pairs

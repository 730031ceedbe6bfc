"""Labeled example sets built from the built-in corpora, so fine-tuning runs need no download.

`builtin:stdlib-packages` (classification): passages of about 12 lines of the standard library's
source, labeled by the package they come from (asyncio, email, tkinter, xml, multiprocessing),
at most `PASSAGES_PER_PACKAGE` per package so the classes are balanced.

`builtin:python-docs-topics` (prompt -> completion): the prompt names a help topic of CPython's
documentation ("Python help topic: assert\\n"), the completion is the topic's first paragraph.

`builtin:python-docstrings` (source -> target, code summarization): the source is a function of
the standard library (`builtin:python-stdlib`'s files) without its docstring, the target the
docstring's first sentence. Each example's `group` is its module (`"email.utils"`), so that a
split keeps every module on one side. About 6,000 pairs from 390 modules for Python 3.11, built
in about 3 seconds (every file is parsed; nothing is cached).
"""

import ast
import gc
import os
import re
import sysconfig
import textwrap

from tfllm.data.builtin import PREFIX, stdlib_source_files
from tfllm.data.example import Example
from tfllm.errors import UserError

CLASSIFICATION_SETS = ("stdlib-packages",)
PROMPT_COMPLETION_SETS = ("python-docs-topics",)
SOURCE_TARGET_SETS = ("python-docstrings",)
SETS = {"classify": CLASSIFICATION_SETS, "sft": PROMPT_COMPLETION_SETS, "seq2seq": SOURCE_TARGET_SETS}
PACKAGES = ("asyncio", "email", "tkinter", "xml", "multiprocessing")
LINES_PER_PASSAGE = 12
PASSAGES_PER_PACKAGE = 300
_MIN_PASSAGE_CHARS = 200
_MAX_COMPLETION_CHARS = 300
# Some 400-500 byte-level BPE tokens: most sources then fit a `model.source_len` of 512 whole, and
# the longer functions (one in sixteen: dispatch tables, parsers) would mostly be cut anyway.
MAX_FUNCTION_CHARS = 1500
# A summary of fewer words ("Helper.", "Internal use.") says nothing the function's name does not.
MIN_SUMMARY_WORDS = 3
# A first "sentence" longer than this is a paragraph without a full stop; cut, it would teach
# summaries that stop mid-sentence.
MAX_SUMMARY_CHARS = 200
# Full stops that rarely end a first sentence ("Return the path, e.g. of a module.").
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.")


def builtin_examples(path, kind):
    """The `Example`s of the built-in set `path` (`builtin:NAME`); `kind` is "classify", "sft" or
    "seq2seq"."""
    name = path[len(PREFIX):]
    if name not in SETS[kind]:
        valid = ", ".join(PREFIX + n for n in SETS[kind])
        files = "a .jsonl or .tsv file" if kind == "seq2seq" else "a .jsonl file"
        raise UserError(f"{path} is not a built-in {kind} set; use one of: {valid}, or {files}")
    if name == "python-docstrings":
        return [Example(code, summary, f"{path}:{i + 1}", group=module)
                for i, (code, summary, module) in enumerate(_stdlib_docstrings())]
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


def _stdlib_docstrings():
    """`(code, summary, module)` of every documented standard library function that fits the
    limits above, in file and line order; a function whose code another module already gave
    (copies such as `_pyio`'s and `io`'s) is left out, so that it cannot sit on both sides of a split."""
    root = sysconfig.get_paths()["stdlib"]
    triples, seen = [], set()
    collecting = gc.isenabled()
    # ast.parse allocates millions of small objects, and each collection they trigger walks
    # TensorFlow's large heap too (half of the build time); the trees hold no reference cycles.
    gc.disable()
    try:
        for relative in stdlib_source_files():
            with open(os.path.join(root, relative), encoding="utf-8") as f:
                text = f.read().replace("\r\n", "\n")
            module = relative[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__")
            for code, summary in _function_docstrings(text):
                if code not in seen:
                    seen.add(code)
                    triples.append((code, summary, module))
    finally:
        if collecting:
            gc.enable()
    return triples


def _function_docstrings(text):
    """`(code without docstring, first sentence of the docstring)` of the functions in `text`."""
    lines = text.split("\n")
    functions = [node for node in ast.walk(ast.parse(text))
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in sorted(functions, key=lambda node: node.lineno):
        docstring = ast.get_docstring(node)
        summary = _first_sentence(docstring, node.name) if docstring else None
        code = _without_docstring(lines, node) if summary else None
        if code is not None and len(code) <= MAX_FUNCTION_CHARS:
            yield code, summary


def _first_sentence(docstring, name):
    """The docstring's first sentence on one line, or None when it is no summary."""
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    sentence = paragraph
    for end in re.finditer(r"[.!?](?=\s|$)", paragraph):
        if not paragraph[: end.end()].endswith(_ABBREVIATIONS):
            sentence = paragraph[: end.end()]
            break
    # A signature ("_munge_whitespace(text : string) -> string") or a doctest is no summary.
    if sentence.startswith(name + "(") or ">>>" in sentence:
        return None
    if len(sentence.split()) < MIN_SUMMARY_WORDS or len(sentence) > MAX_SUMMARY_CHARS:
        return None
    return sentence


def _without_docstring(lines, node):
    """The function's code (decorators included, dedented) without its docstring and the blank
    lines around it, or None when that would not be a valid function without a docstring."""
    docstring = node.body[0]
    if len(node.body) == 1:
        return None  # nothing but the docstring: an abstract method says nothing to summarize
    # ast's columns count UTF-8 bytes. The docstring must have its lines to itself
    # (not `def f(): "Doc."` nor `"Doc."; x = 1`), so that dropping them leaves the rest intact.
    opening = lines[docstring.lineno - 1].encode()[: docstring.col_offset]
    closing = lines[docstring.end_lineno - 1].encode()[docstring.end_col_offset :]
    if opening.strip() or closing.strip():
        return None
    start = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list]) - 1
    # Line indices: the blank lines around the docstring go with it.
    before, after = docstring.lineno - 1, docstring.end_lineno
    while before > start and not lines[before - 1].strip():
        before -= 1
    while after < node.end_lineno and not lines[after].strip():
        after += 1
    code = textwrap.dedent("\n".join(lines[start:before] + lines[after : node.end_lineno]))
    # A multi-line string less indented than the method keeps dedent from working; such code,
    # still indented, does not parse on its own.
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return None
    if len(body) != 1 or ast.get_docstring(body[0]) is not None:
        return None
    return code

"""`builtin:python-docstrings`: standard library functions without their docstrings, each paired
with its docstring's first sentence and labeled with its module."""

import ast
import os
import sysconfig

import pytest

from tfllm.data.builtin import stdlib_source_files
from tfllm.data.builtin_examples import (
    MAX_FUNCTION_CHARS,
    MAX_SUMMARY_CHARS,
    MIN_SUMMARY_WORDS,
    _function_docstrings,
    builtin_examples,
)
from tfllm.data.example import split_examples
from tfllm.data.source_target import read_source_target

PATH = "builtin:python-docstrings"


@pytest.fixture(scope="module")
def examples():
    return read_source_target(PATH)


def function_of(code):
    """The one function `code` defines."""
    (node,) = ast.parse(code).body
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    return node


def test_thousands_of_pairs_numbered_and_labeled_with_their_module(examples):
    modules = {path[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__") for path in stdlib_source_files()}
    assert len(examples) > 3000
    assert [e.source for e in examples] == [f"{PATH}:{i + 1}" for i in range(len(examples))]
    assert {e.group for e in examples} <= modules
    assert len({e.group for e in examples}) > 200
    assert len({code for code, _ in examples}) == len(examples)  # a function copied into two modules comes once


def test_every_source_is_one_dedented_function_without_its_docstring(examples):
    for code, _ in examples:
        assert len(code) <= MAX_FUNCTION_CHARS
        assert code.startswith(("def ", "async def ", "@"))
        node = function_of(code)
        assert ast.get_docstring(node) is None
        if not code.splitlines()[1].strip():  # no blank line is left where the docstring was,
            # only those of a signature over several lines
            assert max(n.end_lineno for n in ast.walk(node.args) if hasattr(n, "end_lineno")) > 2, code


def test_every_target_is_a_documented_first_sentence(examples):
    root = sysconfig.get_paths()["stdlib"]
    files = {path[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__"): path for path in stdlib_source_files()}
    checked = 0
    # Every 8th module, to keep the test fast: its functions' docstrings, by name.
    for module in sorted({e.group for e in examples})[::8]:
        with open(os.path.join(root, files[module]), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        paragraphs = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
                first = " ".join(ast.get_docstring(node).split("\n\n")[0].split())
                paragraphs.setdefault(node.name, []).append(first)
        for code, summary in (e for e in examples if e.group == module):
            assert any(p.startswith(summary) for p in paragraphs[function_of(code).name]), (code, summary)
            assert len(summary.split()) >= MIN_SUMMARY_WORDS and len(summary) <= MAX_SUMMARY_CHARS
            checked += 1
    assert checked > 300


def test_a_known_pair(examples):
    (pair,) = [e for e in examples if e.group == "bz2" and e[0].startswith("def writable(")]
    assert pair == ("def writable(self):\n    self._check_not_closed()\n    return self._mode == _MODE_WRITE",
                    "Return whether the file was opened for writing.")


SOURCE = '''import functools


class Box:
    @functools.cache
    def size(self, scale=2):

        """Return the size of the box, e.g. in pixels. More text.

        Details.
        """

        # A comment after the docstring stays.
        return self.width * scale

    def body(self):
        """Return the body of the page."""
        return """
<html>"""


def one_liner(): "A docstring on the def line."; return 1


def only_doc():
    """Do nothing at all here."""


def short():
    """Helper."""
    return 2


def signature(a):
    """signature(a) -> int

    Returns a."""
    return a


async def fetch(url):
    """Fetch the page at url!  Then parse it."""
    text = """
not indented"""
    return await url
'''


def test_docstrings_are_cut_out_and_what_would_not_parse_is_left_out():
    # `body` is left out: its string, less indented than the method, keeps the code from dedenting;
    # `one_liner` shares its line with the docstring, `only_doc` has nothing else, `short` a
    # one-word summary, `signature` a signature for a summary.
    assert list(_function_docstrings(SOURCE)) == [
        ("@functools.cache\ndef size(self, scale=2):\n    # A comment after the docstring stays.\n"
         "    return self.width * scale", "Return the size of the box, e.g. in pixels."),
        ('async def fetch(url):\n    text = """\nnot indented"""\n    return await url', "Fetch the page at url!"),
    ]


def test_the_set_is_the_same_every_time(examples):
    again = builtin_examples(PATH, "seq2seq")
    assert again == examples
    assert [(e.source, e.group) for e in again] == [(e.source, e.group) for e in examples]


def test_a_seeded_split_keeps_every_module_on_one_side(examples):
    train, val = split_examples(examples, 0.1, seed=3)
    assert not {e.group for e in train} & {e.group for e in val}
    assert len(train) + len(val) == len(examples)
    assert 0.1 <= len(val) / len(examples) < 0.15

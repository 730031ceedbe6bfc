"""Corpora that ship with every Python installation, so a run needs no download.

`builtin:python-docs` is the reference documentation CPython keeps for `help()`
(`pydoc_data.topics.topics`): one document per topic, about 0.5 MB of English
prose with embedded code.

`builtin:python-stdlib` is the `.py` source of the running interpreter's
standard library, one document per file, in sorted path order. It leaves out
`site-packages` (third-party code that differs from machine to machine) and
every directory named `test`, `tests` or `idle_test`: CPython's test suite
carries deliberately broken fixtures (sources in Latin-1 and KOI8-R, bad
syntax), and Debian/Ubuntu split it into a separate package, so leaving it out
keeps the corpus the same on every machine. What remains is about 730 files,
14 MB, for Python 3.11.
"""

import os
import sysconfig
from typing import Iterator

from tfllm.data.document import Document
from tfllm.errors import UserError

PREFIX = "builtin:"
BUILTIN_CORPORA = ("python-docs", "python-stdlib")

_STDLIB_SKIPPED_DIRS = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})


def is_builtin(path: str) -> bool:
    """Whether `path` names a built-in corpus (`builtin:...`)."""
    return path.startswith(PREFIX)


def iter_builtin_documents(path: str) -> Iterator[Document]:
    """Streams the documents of the built-in corpus `path` (`builtin:NAME`)."""
    name = path[len(PREFIX) :]
    if name == "python-docs":
        return _iter_python_docs()
    if name == "python-stdlib":
        return _iter_python_stdlib()
    valid = ", ".join(PREFIX + n for n in BUILTIN_CORPORA)
    raise UserError(f"Unknown built-in corpus {path!r}. Use one of: {valid}.")


def _iter_python_docs() -> Iterator[Document]:
    from pydoc_data.topics import topics

    for topic in sorted(topics):
        yield Document(text=topics[topic], source=f"{PREFIX}python-docs:{topic}")


def stdlib_source_files() -> list[str]:
    """Paths, relative to the stdlib root, of the `builtin:python-stdlib` files."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _STDLIB_SKIPPED_DIRS]
        relative_dir = os.path.relpath(directory, root)
        for name in files:
            if name.endswith(".py"):
                found.append(os.path.normpath(os.path.join(relative_dir, name)))
    return sorted(found)


def _iter_python_stdlib() -> Iterator[Document]:
    root = sysconfig.get_paths()["stdlib"]
    for relative in stdlib_source_files():
        path = os.path.join(root, relative)
        with open(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(
                f"{path} is not valid UTF-8 at byte offset {e.start}; the standard "
                "library should be UTF-8 (PEP 3120): use another corpus or a "
                "directory of re-encoded files."
            ) from None
        yield Document(text=text, source=f"{PREFIX}python-stdlib:{relative}")

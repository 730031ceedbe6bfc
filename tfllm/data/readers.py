"""Reads raw corpora into a stream of `Document`s.

A corpus path is one of:
- a file: `.jsonl` is JSON Lines (one object with a `"text"` string per line),
  anything else is UTF-8 text;
- a directory: every `.txt`, `.md` and `.jsonl` file below it, recursively, in
  sorted path order (hidden files and directories, such as `.git`, are skipped);
- a glob (`data/*.txt`, `data/**/*.jsonl`): every matching file, in sorted order;
- `builtin:python-docs` or `builtin:python-stdlib` (see `tfllm.data.builtin`).

A text file is one document, or with `blank_line_documents=True` each block of
lines separated by blank lines is one. Files are streamed line by line except a
single-document text file, which must fit in memory.
"""

import codecs
import glob
import json
import os
from typing import BinaryIO, Iterator

from tfllm.data.builtin import is_builtin, iter_builtin_documents
from tfllm.data.document import Document
from tfllm.errors import UserError

DIRECTORY_SUFFIXES = (".txt", ".md", ".jsonl")
# Like git, a NUL byte near the start marks a file as binary.
_SNIFF_BYTES = 8192
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def iter_documents(path: str, blank_line_documents: bool = False) -> Iterator[Document]:
    """Streams the documents of the corpus at `path`.

    Raises `UserError` for a missing path, a glob or directory without corpus
    files, a binary file, invalid UTF-8 (naming the byte offset) and a
    malformed JSON Lines record (naming the line).
    """
    if is_builtin(path):
        yield from iter_builtin_documents(path)
        return
    for file in resolve_files(path):
        yield from _iter_file(file, blank_line_documents)


def resolve_files(path: str) -> list[str]:
    """The files a (non built-in) corpus path stands for, in reading order."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = _walk(path)
        if not files:
            raise UserError(
                f"Directory {path!r} contains no {', '.join(DIRECTORY_SUFFIXES)} files. "
                "Point data.path at a directory of text files, a file or a glob."
            )
        return files
    if any(c in path for c in "*?["):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise UserError(f"Glob {path!r} matches no files. Check the pattern and the working directory.")
        files = []
        for match in matches:
            files.extend(_walk(match) if os.path.isdir(match) else [match])
        if not files:
            raise UserError(f"Glob {path!r} matches only directories without corpus files.")
        return files
    raise UserError(f"Corpus path {path!r} does not exist. Give a file, a directory, a glob or builtin:NAME.")


def _walk(directory: str) -> list[str]:
    found = []
    for root, subdirs, files in os.walk(directory):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found.extend(
            os.path.join(root, name)
            for name in files
            if name.endswith(DIRECTORY_SUFFIXES) and not name.startswith(".")
        )
    return sorted(found)


def _iter_file(path: str, blank_line_documents: bool) -> Iterator[Document]:
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
        _check_not_binary(head, path, 0)
        f.seek(0)
        if path.endswith(".jsonl"):
            yield from _iter_jsonl(f, path)
        elif blank_line_documents:
            yield from _iter_blocks(f, path)
        else:
            yield Document(text=_decode(f.read(), path, 0), source=path)


def _iter_jsonl(f: BinaryIO, path: str) -> Iterator[Document]:
    offset = 0
    for line_number, raw in enumerate(f, start=1):
        line = _decode(raw, path, offset)
        offset += len(raw)
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise _invalid_json(where, describe_json_error(e)) from None
        except ValueError:
            # Python refuses integers of more than 4300 digits, and json says so with a plain ValueError.
            raise _invalid_json(where, "a number too long to read") from None
        except RecursionError:
            raise _invalid_json(where, "arrays or objects nested too deeply") from None
        if not isinstance(record, dict):
            raise UserError(
                f'{where} is a JSON {_JSON_TYPES[type(record)]}; expected an object with a "text" string.'
            )
        text = record.get("text")
        if not isinstance(text, str):
            problem = f'has a "text" {_JSON_TYPES[type(text)]}' if "text" in record else 'has no "text" field'
            raise UserError(f'{where} {problem}; every record needs a "text" string.')
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise UserError(
                f"{where} has an unpaired surrogate escape at character {e.start} of its text, "
                "which is not valid Unicode. Fix the record or drop it."
            ) from None
        yield Document(text=text, source=where)


def describe_json_error(error: json.JSONDecodeError) -> str:
    """What is wrong and where on the line: `Expecting value at column 3`.

    Some of json's messages already end in "at" (`Invalid control character at`). The column
    counts from the start of the parsed line, and a line cut short is reported just after its
    last character: json's own `colno` restarts after the line's newline, at column 1.
    """
    column = min(error.pos, len(error.doc.rstrip("\r\n"))) + 1
    return f"{error.msg.removesuffix(' at')} at column {column}"


def _invalid_json(where: str, problem: str) -> UserError:
    return UserError(
        f"{where} is not valid JSON ({problem}). Each line of a "
        '.jsonl file must be one JSON object with a "text" string.'
    )


def _iter_blocks(f: BinaryIO, path: str) -> Iterator[Document]:
    offset = 0
    block: list[str] = []
    first_line = 0
    for line_number, raw in enumerate(f, start=1):
        line = _decode(raw, path, offset)
        offset += len(raw)
        if line.strip():
            if not block:
                first_line = line_number
            block.append(line)
        elif block:
            yield _block_document(block, path, first_line)
            block = []
    if block:
        yield _block_document(block, path, first_line)


def _block_document(lines: list[str], path: str, first_line: int) -> Document:
    # The last line break belongs to the separator, not to the document.
    text = "".join(lines)
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return Document(text=text, source=f"{path}:{first_line}")


def _check_not_binary(raw: bytes, path: str, offset: int) -> None:
    nul = raw.find(b"\0")
    if nul >= 0:
        raise UserError(
            f"{path} looks binary (NUL byte at byte offset {offset + nul}). Corpus files must be "
            "UTF-8 text; remove it or narrow data.path."
        )


def _decode(raw: bytes, path: str, offset: int) -> str:
    """Decodes one chunk of `path` that starts at byte `offset`, strictly."""
    _check_not_binary(raw, path, offset)
    if offset == 0 and raw.startswith(codecs.BOM_UTF8):
        raw, offset = raw[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not valid UTF-8 at byte offset {offset + e.start}. Re-encode it as UTF-8 "
            "(for example `iconv -f LATIN1 -t UTF-8 in.txt > out.txt`)."
        ) from None

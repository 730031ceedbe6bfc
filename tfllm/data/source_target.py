"""Source -> target pairs (translation, summarization): JSON Lines or tab-separated files.

A path is a file, a directory (every `.jsonl` and `.tsv` file below it, sorted), a glob, or
the built-in set `builtin:python-docstrings` (`tfllm.data.builtin_examples`). A `.tsv` file
holds one pair per line, the source, one tab, the target, as Tatoeba and Anki share sentence
pairs: no header, no quoting, so neither side can hold a tab or a line break. Any other file
is JSON Lines, `{"source": "...", "target": "..."}` per line. Every mistake in a file is a
`UserError` naming `FILE:LINE`, and so is a file without a pair (a failed download or export
leaves one empty).
"""

from tfllm.data.builtin import is_builtin
from tfllm.data.builtin_examples import builtin_examples
from tfllm.data.example import Example
from tfllm.data.labeled import labeled_files, read_pairs, utf8_lines
from tfllm.errors import UserError

KEYS = ("source", "target")
SUFFIXES = (".jsonl", ".tsv")


def read_source_target(path: str) -> list:
    """The `(source, target)` examples of the files at `path`, each with its `source` `"FILE:LINE"`.

    Raises:
        UserError: naming `FILE:LINE` for a line that is not UTF-8, a JSON line that is not an
            object with "source" and "target" strings, a `.tsv` line without exactly one tab;
            naming the file when it holds no pair.
    """
    if is_builtin(path):
        return builtin_examples(path, "seq2seq")
    examples = []
    for file in labeled_files(path, SUFFIXES):
        examples += read_tsv_pairs(file) if file.endswith(".tsv") else read_pairs(file, KEYS)
    return examples


def read_tsv_pairs(path: str) -> list:
    """The `(source, target)` examples of the tab-separated file `path`, one per non-blank line.

    Raises:
        UserError: as `read_source_target`.
    """
    examples = []
    for source, line in utf8_lines(path):
        # Only the line end goes: spaces may belong to the text, and both sides are kept verbatim.
        line = line.rstrip("\r\n")
        tabs = line.count("\t")
        if tabs != 1:
            found = "no tab" if tabs == 0 else f"{tabs} tabs"
            raise UserError(
                f"{source}: {found}; each line of a .tsv file must be a source, one tab and a target "
                "(remove any further column, such as Anki's attribution, or write JSON Lines instead)."
            )
        first, second = line.split("\t")
        examples.append(Example(first, second, source))
    if not examples:
        raise UserError(f"{path} holds no examples; add one pair per line, the source, a tab and the target.")
    return examples

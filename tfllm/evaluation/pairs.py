"""Prompt/reference evaluation data: JSON Lines with a "prompt" and a "reference" string per line
(or, as seq2seq training data, a "source" and a "target"), and the check that texts to score
come with one reference each."""

import json

from tfllm.data.readers import describe_json_error
from tfllm.errors import UserError

FIELDS = ("prompt", "reference")
# The same pairs written as seq2seq training data.
SOURCE_TARGET = ("source", "target")


def _records(path):
    """(line number, parsed JSON value) of every non-blank line of `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield line_number, json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(
                        f"{path}:{line_number} is not valid JSON ({describe_json_error(e)}); "
                        'each line must be one object with "prompt" and "reference" strings'
                    ) from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid UTF-8 ({e.reason}); re-encode it as UTF-8") from None


def is_pairs_file(path):
    """True when `path` is a .jsonl file whose first record has a "prompt" (or "source") field."""
    if not path.endswith(".jsonl"):
        return False
    try:
        first = next(_records(path), None)
    except (OSError, UserError):
        # Whoever reads the file as text reports the problem.
        return False
    return first is not None and isinstance(first[1], dict) and ("prompt" in first[1] or "source" in first[1])


def read_pairs(path):
    """`(prompts, references)`, two lists of str, from a prompt/reference JSON Lines file (or one
    of "source" and "target" strings, as the first line has them).

    Raises `UserError` naming the file and line of a record that is not an object with a
    "prompt" string and a "reference" string, and for a file without records.
    """
    prompts, references = [], []
    fields = None
    try:
        for line_number, record in _records(path):
            where = f"{path}:{line_number}"
            if fields is None:
                fields = SOURCE_TARGET if isinstance(record, dict) and "source" in record else FIELDS
            needs = f'each line needs "{fields[0]}" and "{fields[1]}" strings'
            if not isinstance(record, dict):
                raise UserError(f"{where} is not a JSON object; {needs}")
            for field in fields:
                if field not in record:
                    raise UserError(f'{where} has no "{field}" field; {needs}')
                if not isinstance(record[field], str):
                    raise UserError(
                        f'{where} has a "{field}" of type {type(record[field]).__name__}; it must be a string'
                    )
            prompts.append(record[fields[0]])
            references.append(record[fields[1]])
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}; pass an existing .jsonl file") from None
    if not prompts:
        raise UserError(f'{path} holds no records; add lines with "prompt" and "reference" strings')
    return prompts, references


def check_one_reference_each(scorer, texts, references, names=("hypothesis", "hypotheses")):
    """Raises a `ValueError` naming the function `scorer` unless `texts` and `references` pair up.

    `names` is what a text is called, singular and plural, in the message.
    """
    if len(texts) != len(references):
        raise ValueError(
            f"{scorer} needs one reference per {names[0]}. "
            f"Received: {len(texts)} {names[1]}, {len(references)} references"
        )

"""Labeled fine-tuning data: JSON Lines of classification or prompt/completion examples.

A path is a `.jsonl` file, a directory (every `.jsonl` file below it, sorted),
or a glob (or a built-in set, `tfllm.data.builtin_examples`). Classification lines are `{"text": "...", "label": "spam"}` (labels
are all strings or all integers); `sft` lines are `{"prompt": "...", "completion": "..."}` or
a conversation, `{"messages": [{"role": "user", "content": "..."}, ...]}` (`tfllm.data.chat`),
mixed as you like. Every mistake in a file is a `UserError` naming `FILE:LINE`.
`tfllm.data.source_target` reads its files with the same helpers (`labeled_files`,
`utf8_lines`, `read_pairs`).
"""

import codecs
import glob
import json
import os
from typing import Iterator, Sequence, Union

from tfllm.data.builtin import is_builtin
from tfllm.data.builtin_examples import builtin_examples
from tfllm.data.chat import ROLES, Conversation
from tfllm.data.example import Example
from tfllm.data.readers import describe_json_error
from tfllm.errors import UserError
from tfllm.files import write_atomically

LABELS_FILENAME = "labels.json"
# What an `sft` line holds, for errors.
SFT_LINE = '"prompt" and "completion", or "messages"'

Label = Union[str, int]


def read_classification(path: str) -> list[Example]:
    """The `(text, label)` examples of the JSON Lines at `path`, each with its `source`.

    Every line needs a "text" string and a "label" that is a string or an
    integer; all labels share one type.

    Raises:
        UserError: naming `FILE:LINE` for a line that is not UTF-8 or not a
            JSON object, a missing key, a value of the wrong type or labels of
            mixed types; naming `path` when it holds no example.
    """
    if is_builtin(path):
        return builtin_examples(path, "classify")
    examples = []
    first_label = None
    for source, record in _records(path, ("text", "label")):
        text, label = record["text"], record["label"]
        _check_string(text, "text", source)
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise UserError(
                f'{source}: "label" is {_json_type(label)} {_show(label)}; a label must be a string '
                "or an integer."
            )
        if isinstance(label, str):
            _check_string(label, "label", source)
        if first_label is None:
            first_label = (label, source)
        elif type(label) is not type(first_label[0]):
            raise UserError(
                f"labels mix str and int: {source} has {label!r} but {first_label[1]} has {first_label[0]!r}; "
                "write every label as a string or every label as an integer."
            )
        examples.append(Example(text, label, source))
    _check_not_empty(examples, path, '{"text": "...", "label": "..."}')
    return examples


def read_prompt_completion(path: str) -> list[Example]:
    """The `sft` examples of the JSON Lines at `path`, each with its `source`: `(prompt,
    completion)` of a line with "prompt" and "completion" strings, `(Conversation, None)` of a
    line with "messages" (`read_conversation`).

    Raises:
        UserError: as `read_classification`, for "prompt" and "completion" strings, and for
            what `read_conversation` refuses.
    """
    if is_builtin(path):
        return builtin_examples(path, "sft")
    keys = ("prompt", "completion")
    examples = []
    for source, record in _records(path, (), SFT_LINE):
        if "messages" in record:
            both = [key for key in keys if key in record]
            if both:
                raise UserError(f'{source}: "messages" and {_keys(both)} on one line; a line is a conversation or '
                                "a prompt and completion, so write one or the other.")
            examples.append(Example(read_conversation(record["messages"], source), None, source))
            continue
        for key in keys:
            if key not in record:
                raise UserError(f'{source}: no "{key}" key; every line needs {SFT_LINE}.')
            _check_string(record[key], key, source)
        examples.append(Example(record["prompt"], record["completion"], source))
    _check_not_empty(examples, path, '{"prompt": "...", "completion": "..."}')
    return examples


def read_conversation(messages, source: str) -> Conversation:
    """The `Conversation` of a line's "messages": a non-empty array of objects, each with a "role"
    of `ROLES` and a "content" string, at least one of them an assistant message to learn (an
    assistant message may say `"weight": 0` or 1, as OpenAI's fine-tuning files do).

    Raises:
        UserError: naming `source` (`FILE:LINE`), the message and the key that is wrong.
    """
    example = '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
    if not isinstance(messages, list) or not messages:
        what = "an empty array" if messages == [] else f"{_json_type(messages)} {_show(messages)}"
        raise UserError(f'{source}: "messages" is {what}; write the conversation as an array of messages, like '
                        f"{example}.")
    for number, message in enumerate(messages, start=1):
        where = f"{source}: message {number}"
        if not isinstance(message, dict):
            raise UserError(f'{where} is {_json_type(message)} {_show(message)}; a message is an object like '
                            '{"role": "user", "content": "..."}.')
        for key in ("role", "content"):
            if key not in message:
                raise UserError(f'{where} has no "{key}" key; every message needs "role" and "content".')
        role = message["role"]
        if role not in ROLES:
            raise UserError(f'{where} has "role" {_show(role)}; a role is {_keys(ROLES, "or")}.')
        _check_string(message["content"], "content", where)
        weight = message.get("weight")
        if "weight" in message and (role != "assistant" or isinstance(weight, bool) or weight not in (0, 1)):
            raise UserError(f'{where} has "weight" {_show(weight)}; only an assistant message has a weight, 0 '
                            "(context, not learned) or 1 (learned, the default).")
    conversation = Conversation(messages)
    if not any(conversation.learned(i) for i in range(len(conversation))):
        raise UserError(f'{source}: no assistant message to learn; a conversation needs one with "role": "assistant" '
                        'and no "weight": 0.')
    return conversation


def example_texts(examples) -> Iterator[str]:
    """The strings of `examples`, the contents of a conversation's messages included: what a
    tokenizer trained for them reads."""
    for example in examples:
        for part in example:
            if isinstance(part, str):
                yield part
            elif isinstance(part, Conversation):
                yield from part.texts()


def read_pairs(path: str, keys: tuple) -> list[Example]:
    """The examples of the JSON Lines at `path` whose lines hold two strings, under `keys`.

    Raises:
        UserError: as `read_classification`.
    """
    examples = []
    for source, record in _records(path, keys):
        for key in keys:
            _check_string(record[key], key, source)
        examples.append(Example(record[keys[0]], record[keys[1]], source))
    _check_not_empty(examples, path, "{" + ", ".join(f'"{key}": "..."' for key in keys) + "}")
    return examples


class LabelMap:
    """Label <-> class id, ids in sorted label order.

    Args:
        labels: the distinct labels, label of id i at index i.

    Example:
    ```python
    label_map = LabelMap.from_labels([label for _, label in train])
    label_map.encode([label for _, label in val], [example.source for example in val])
    label_map.save(f"{run_dir}/{LABELS_FILENAME}")
    ```
    """

    def __init__(self, labels: Sequence[Label]):
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct. Received: {labels}")
        self.labels = labels
        self._ids = {label: i for i, label in enumerate(labels)}

    @classmethod
    def from_labels(cls, training_labels: Sequence[Label]) -> "LabelMap":
        """One class per distinct training label, sorted."""
        return cls(sorted(set(training_labels)))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def encode(self, labels: Sequence[Label], source: Union[str, Sequence[str]]) -> list[int]:
        """The class ids of `labels`.

        Args:
            labels: labels to encode.
            source: `"FILE:LINE"` of each label (`Example.source`), for errors;
                or one name for all of them (a file), and errors then give the
                label's place in `labels` instead of its line.

        Raises:
            UserError: naming where a label the training data does not have
                comes from.
        """
        if isinstance(source, str):
            source = [f"{source} (example {i + 1})" for i in range(len(labels))]
        if len(labels) != len(source):
            raise ValueError(f"labels and source must have one entry each. Received: {len(labels)}, {len(source)}")
        ids = []
        for label, where in zip(labels, source):
            if label not in self._ids or type(label) is not type(self.labels[0]):
                raise UserError(
                    f"label {label!r} at {where} does not occur in the training data (its labels: "
                    f"{_preview(self.labels)}); fix the label or add training examples of it."
                )
            ids.append(self._ids[label])
        return ids

    def decode(self, ids: Sequence[int]) -> list[Label]:
        """The labels of class `ids`."""
        return [self.labels[int(i)] for i in ids]

    def save(self, path: str) -> None:
        """Writes the labels to the JSON file `path` (`RUN_DIR/labels.json`) atomically."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_atomically(path, json.dumps({"labels": self.labels}, ensure_ascii=False, indent=2))

    @classmethod
    def load(cls, path: str) -> "LabelMap":
        """The map `save(path)` wrote; `UserError` when missing or corrupt."""
        try:
            with open(path, encoding="utf-8") as file:
                labels = json.load(file)["labels"]
            if not isinstance(labels, list) or not labels or len({type(label) for label in labels}) != 1:
                raise ValueError("labels must be a non-empty list of one type")
            return cls(labels)
        except FileNotFoundError:
            raise UserError(f"{path} does not exist; train a classifier into this run directory first.") from None
        except (ValueError, TypeError, KeyError) as error:
            raise UserError(f"{path} is corrupt ({error}); train the classifier again.") from None


def balanced_class_weights(label_ids: Sequence[int], num_classes: int) -> dict[int, float]:
    """Inverse-frequency class weights: `n / (num_classes * count[c])` (`train.class_weights=balanced`).

    Every class then carries the same total weight, `n / num_classes`.

    Args:
        label_ids: the training class ids, each in `[0, num_classes)`.
        num_classes: the number of classes; each must occur in `label_ids`.

    Returns:
        dict of class id -> float weight, for `model.fit(class_weight=...)`.
    """
    counts = [0] * num_classes
    for i in label_ids:
        if not 0 <= i < num_classes:
            raise ValueError(f"label ids must be in [0, {num_classes}). Received: {i}")
        counts[i] += 1
    missing = [c for c, count in enumerate(counts) if count == 0]
    if missing:
        raise ValueError(f"every class needs an example to be weighted. Received none of classes {missing}")
    n = len(label_ids)
    return {c: n / (num_classes * count) for c, count in enumerate(counts)}


def _records(path: str, keys: tuple, expected: str = "") -> Iterator[tuple]:
    """`("FILE:LINE", record)` for every non-blank line of the files of `path`, each holding `keys`;
    `expected` says what a line holds, for errors (default: `keys`)."""
    expected = expected or _keys(keys)
    for file in labeled_files(path):
        for source, line in utf8_lines(file):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise _invalid_json(source, describe_json_error(e), expected) from None
            except ValueError:
                # Python refuses integers of more than 4300 digits with a plain ValueError.
                raise _invalid_json(source, "a number too long to read", expected) from None
            except RecursionError:
                raise _invalid_json(source, "arrays or objects nested too deeply", expected) from None
            if not isinstance(record, dict):
                raise UserError(f"{source}: a JSON {_json_type(record)}; expected an object with {expected}.")
            for key in keys:
                if key not in record:
                    raise UserError(f'{source}: no "{key}" key; every line needs {expected}.')
            yield source, record


def _invalid_json(source: str, problem: str, expected: str) -> UserError:
    return UserError(f"{source}: not valid JSON ({problem}); each line must be one JSON object with {expected}.")


def labeled_files(path: str, suffixes: tuple = (".jsonl",)) -> list[str]:
    """The files `path` stands for: itself when a file (whatever its name), else the files
    named `*SUFFIX` in the directory (recursively) or matching the glob, sorted; hidden files
    and directories are skipped.

    Raises:
        UserError: naming `path` when it does not exist or holds no such file.
    """
    if os.path.isfile(path):
        return [path]
    kinds = " or ".join(suffixes)
    is_glob = any(c in path for c in "*?[")
    if not os.path.exists(path) and not is_glob:
        raise UserError(f"{path} does not exist; give a {kinds} file, a directory of {kinds} files or a glob.")
    matches = sorted(glob.glob(path, recursive=True)) if is_glob and not os.path.isdir(path) else [path]
    # A directory or glob may also hold the .txt/.md files corpora are read from.
    files = [file for match in matches for file in (_walk(match) if os.path.isdir(match) else [match])]
    files = [file for file in files if file.endswith(suffixes)]
    if not files:
        raise UserError(f"{path!r} holds no {kinds} files; point it at a {kinds} file, a directory of them or a glob.")
    return files


def _walk(directory: str) -> list[str]:
    found = []
    for root, subdirs, files in os.walk(directory):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found.extend(os.path.join(root, name) for name in files if not name.startswith("."))
    return sorted(found)


def utf8_lines(path: str) -> Iterator[tuple]:
    """`("FILE:LINE", text)` of every non-blank line of the file `path`, decoded strictly as
    UTF-8 (a byte order mark opening the file is dropped); `UserError` naming `FILE:LINE` for
    a line that is not UTF-8 or holds a NUL byte."""
    try:
        with open(path, "rb") as file:
            for number, raw in enumerate(file, start=1):
                source = f"{path}:{number}"
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                if b"\0" in raw:
                    raise UserError(
                        f"{source}: NUL byte, the file looks binary; labeled data must be UTF-8 text."
                    )
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{source}: not valid UTF-8 at byte {e.start} of the line; re-encode the file as UTF-8."
                    ) from None
                if line.strip():
                    yield source, line
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}; pass a readable file.") from None


def _check_string(value, key: str, source: str) -> None:
    if not isinstance(value, str):
        what = "null" if value is None else f"{_json_type(value)} {_show(value)}"
        raise UserError(f'{source}: "{key}" is {what}; it must be a string.')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(
            f'{source}: "{key}" has an unpaired surrogate escape at character {e.start}, which is not valid '
            "Unicode; fix the line."
        ) from None


def _check_not_empty(examples: list, path: str, shape: str) -> None:
    if not examples:
        raise UserError(f"{path} holds no examples; add one JSON object per line, like {shape}.")


def _json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "an integer" if isinstance(value, int) else "a number"


def _show(value, limit: int = 40) -> str:
    shown = json.dumps(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _keys(keys, conjunction: str = "and") -> str:
    quoted = [f'"{key}"' for key in keys]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {conjunction} {quoted[-1]}"


def _preview(labels: list, limit: int = 10) -> str:
    shown = ", ".join(repr(label) for label in labels[:limit])
    return shown + (f", ... ({len(labels)} in all)" if len(labels) > limit else "")

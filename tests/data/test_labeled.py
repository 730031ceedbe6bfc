import json
import os

import numpy as np
import pytest

from tfllm.data.labeled import (
    LABELS_FILENAME,
    LabelMap,
    balanced_class_weights,
    read_classification,
    read_prompt_completion,
)
from tfllm.errors import UserError


def write(path, lines):
    """Writes JSON Lines: dicts are dumped, str and bytes written as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"".join(
        (line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()) + b"\n"
        for line in lines
    )
    path.write_bytes(raw)
    return str(path)


def test_classification_examples_with_their_sources(tmp_path):
    path = write(tmp_path / "train.jsonl", [{"text": "good", "label": "pos"}, "", {"text": "bad", "label": "neg"}])
    examples = read_classification(path)
    assert examples == [("good", "pos"), ("bad", "neg")]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:3"]
    text, label = examples[1]
    assert (text, label) == ("bad", "neg")


def test_prompt_completion_from_a_directory_and_a_glob(tmp_path):
    write(tmp_path / "d" / "b.jsonl", [{"prompt": "2+2=", "completion": "4"}])
    write(tmp_path / "d" / "a.jsonl", [{"prompt": "1+1=", "completion": "2", "id": 7}])
    (tmp_path / "d" / "notes.txt").write_text("not data")
    expected = [("1+1=", "2"), ("2+2=", "4")]
    assert read_prompt_completion(str(tmp_path / "d")) == expected
    assert read_prompt_completion(str(tmp_path / "d" / "*.jsonl")) == expected


@pytest.mark.parametrize(
    "lines, line, message",
    [
        ([{"text": "a", "label": 1}, '{"text": "b", "label": 2'], 2, "not valid JSON"),
        ([{"text": "a", "label": "x"}, {"text": "b"}], 2, 'no "label" key'),
        ([{"text": "a", "label": "x"}, {"label": "y"}], 2, 'no "text" key'),
        ([{"text": "a", "label": "x"}, {"text": "b", "label": 3}], 2, "labels mix str and int"),
        ([{"text": "a", "label": True}], 1, '"label" is a boolean true'),
        ([{"text": "a", "label": 1.5}], 1, '"label" is a number 1.5'),
        ([{"text": "a", "label": ["x"]}], 1, '"label" is an array'),
        ([{"text": 3, "label": "x"}], 1, '"text" is an integer 3'),
        ([{"text": "a", "label": "x"}, [1, 2]], 2, "a JSON an array"),
        ([{"text": "a", "label": "x"}, b'{"text": "caf\xe9", "label": "x"}'], 2, "not valid UTF-8 at byte 13"),
        ([{"text": "a", "label": "x"}, b"\x00\x01binary"], 2, "looks binary"),
    ],
)
def test_each_mistake_names_the_file_and_line(tmp_path, lines, line, message):
    path = write(tmp_path / "train.jsonl", lines)
    with pytest.raises(UserError) as error:
        read_classification(path)
    assert f"{path}:{line}" in str(error.value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_mixed_labels_across_files_name_both_places(tmp_path):
    write(tmp_path / "a.jsonl", [{"text": "a", "label": "x"}])
    write(tmp_path / "b.jsonl", ["", {"text": "b", "label": 0}])
    with pytest.raises(UserError, match=r"labels mix str and int: .*b\.jsonl:2 has 0 but .*a\.jsonl:1 has 'x'"):
        read_classification(str(tmp_path))


def test_prompt_completion_needs_strings(tmp_path):
    path = write(tmp_path / "sft.jsonl", [{"prompt": "p", "completion": None}])
    with pytest.raises(UserError, match=f'{path}:1: "completion" is null'):
        read_prompt_completion(path)


@pytest.mark.parametrize("lines", [[], ["", "  "]])
def test_no_examples_is_an_error(tmp_path, lines):
    path = write(tmp_path / "empty.jsonl", lines)
    with pytest.raises(UserError, match=f"{path} holds no examples"):
        read_classification(path)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(UserError, match="nope.jsonl does not exist"):
        read_classification(str(tmp_path / "nope.jsonl"))


def test_label_map_sorts_round_trips_and_encodes(tmp_path):
    label_map = LabelMap.from_labels(["pos", "neg", "neutral", "pos"])
    assert label_map.labels == ["neg", "neutral", "pos"]
    path = str(tmp_path / "run" / LABELS_FILENAME)
    label_map.save(path)
    label_map.save(path)  # replaces the file
    assert os.listdir(tmp_path / "run") == [LABELS_FILENAME]  # the temporary file was renamed, not left behind
    loaded = LabelMap.load(path)
    assert loaded.labels == label_map.labels and loaded.num_classes == 3
    assert loaded.encode(["pos", "neg"], ["v:1", "v:2"]) == [2, 0]
    assert loaded.decode([1, 2]) == ["neutral", "pos"]


def test_integer_labels_stay_integers(tmp_path):
    label_map = LabelMap.from_labels([10, 2, 33])
    label_map.save(str(tmp_path / LABELS_FILENAME))
    loaded = LabelMap.load(str(tmp_path / LABELS_FILENAME))
    assert loaded.labels == [2, 10, 33]
    assert loaded.encode([33], ["v:1"]) == [2]
    with pytest.raises(UserError, match="label '33' at v:1 does not occur"):
        loaded.encode(["33"], ["v:1"])


def test_unseen_validation_label_names_file_and_line(tmp_path):
    train = read_classification(write(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}]))
    val_path = write(tmp_path / "val.jsonl", [{"text": "a", "label": "x"}, "", {"text": "b", "label": "z"}])
    val = read_classification(val_path)
    label_map = LabelMap.from_labels([label for _, label in train])
    with pytest.raises(UserError, match=f"label 'z' at {val_path}:3 does not occur in the training data"):
        label_map.encode([label for _, label in val], [e.source for e in val])
    # Given only the file, the error names the file and the example's place in it.
    with pytest.raises(UserError, match=f"label 'z' at {val_path} \\(example 2\\) does not occur"):
        label_map.encode([label for _, label in val], val_path)


def test_corrupt_labels_file_is_an_error(tmp_path):
    (tmp_path / LABELS_FILENAME).write_text('{"labels": []}')
    with pytest.raises(UserError, match="labels.json is corrupt"):
        LabelMap.load(str(tmp_path / LABELS_FILENAME))
    with pytest.raises(UserError, match="other.json does not exist"):
        LabelMap.load(str(tmp_path / "other.json"))


def test_balanced_class_weights_match_numpy():
    label_ids = [0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 1, 2]
    counts = np.bincount(label_ids, minlength=3)
    expected = len(label_ids) / (3 * counts)
    weights = balanced_class_weights(label_ids, 3)
    assert sorted(weights) == [0, 1, 2]
    np.testing.assert_allclose([weights[c] for c in range(3)], expected)
    # Each class then carries the same total weight.
    np.testing.assert_allclose(counts * expected, len(label_ids) / 3)


def test_balanced_class_weights_need_every_class():
    with pytest.raises(ValueError, match=r"none of classes \[2\]"):
        balanced_class_weights([0, 1, 1], 3)

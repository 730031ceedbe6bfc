import json

import pytest

from tfllm.errors import UserError
from tfllm.evaluation import is_pairs_file, read_pairs
from tfllm.evaluation.pairs import check_one_reference_each


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_read_pairs_skips_blank_lines_and_keeps_unicode(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [
        json.dumps({"prompt": "Q: 2+2?", "reference": "4"}), "",
        json.dumps({"prompt": "café", "reference": "кошка", "id": 7}, ensure_ascii=False),
    ])
    assert read_pairs(path) == (["Q: 2+2?", "café"], ["4", "кошка"])
    assert is_pairs_file(path)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a"}', 'p.jsonl:2 has no "reference" field'),
        ('{"reference": "a"}', 'p.jsonl:2 has no "prompt" field'),
        ('{"prompt": "a", "reference": 3}', 'p.jsonl:2 has a "reference" of type int'),
        ('["a", "b"]', "p.jsonl:2 is not a JSON object"),
        ('{"prompt": ', "p.jsonl:2 is not valid JSON"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": "x", "reference": "y"}), line])
    with pytest.raises(UserError, match=message):
        read_pairs(path)


def test_is_pairs_file_only_for_jsonl_with_a_prompt(tmp_path):
    assert not is_pairs_file(write_lines(tmp_path / "t.jsonl", ['{"text": "a"}']))
    assert not is_pairs_file(write_lines(tmp_path / "t.txt", ['{"prompt": "a"}']))
    assert not is_pairs_file(str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="holds no records"):
        read_pairs(write_lines(tmp_path / "empty.jsonl", [""]))


def test_check_one_reference_each_names_the_scorer_and_both_counts():
    check_one_reference_each("bleu_score", ["a", "b"], ["c", "d"])
    check_one_reference_each("bleu_score", [], [])
    with pytest.raises(ValueError, match=r"^bleu_score needs one reference per hypothesis\. "
                                         r"Received: 2 hypotheses, 1 references$"):
        check_one_reference_each("bleu_score", ["a", "b"], ["c"])
    with pytest.raises(ValueError, match=r"^label_scores needs one reference per prediction\. "
                                         r"Received: 1 predictions, 0 references$"):
        check_one_reference_each("label_scores", ["a"], [], names=("prediction", "predictions"))

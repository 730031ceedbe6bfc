import pytest
import sacrebleu

from tfllm.evaluation import bleu_score

FIXTURES = {
    "ascii": (
        ["the cat sat on the mat", "a dog ran in the park today", "hello there"],
        ["the cat sat on a mat", "the dog ran in the park", "hello world , there"],
    ),
    "empty hypothesis": (["", "the cat sat on the mat"], ["the cat sat", "the cat sat on the mat"]),
    "non-ascii": (
        ["le café est très chaud", "кошка сидит на ковре", "über den Fluß"],
        ["le café est chaud", "кошка сидела на ковре", "über den Fluss"],
    ),
}


@pytest.mark.parametrize("name", FIXTURES)
def test_bleu_equals_sacrebleu(name):
    hypotheses, references = FIXTURES[name]
    result = bleu_score(hypotheses, references)
    assert result["bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert "nrefs:1" in result["bleu_signature"] and "tok:13a" in result["bleu_signature"]


def test_bleu_bounds():
    assert bleu_score(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(100.0)
    assert bleu_score([""], ["the cat sat on the mat"])["bleu"] == 0.0
    assert 0.0 < bleu_score(*FIXTURES["ascii"])["bleu"] < 100.0


def test_bleu_needs_one_reference_per_hypothesis():
    with pytest.raises(ValueError, match="Received: 2 hypotheses, 1 references"):
        bleu_score(["a", "b"], ["a"])

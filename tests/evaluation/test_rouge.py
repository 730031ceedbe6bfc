import pytest
from rouge_score import rouge_scorer

from tfllm.evaluation import ROUGE_TYPES, rouge_scores

ASCII = (
    ["the cats were sitting on the mat", "a dog ran in the park today", "", "Hello, World!"],
    ["the cat sat on a mat", "the dog ran in the park", "nothing was generated", "hello world"],
)


def library_means(hypotheses, references):
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = [scorer.score(target, prediction) for prediction, target in zip(hypotheses, references)]
    return {t: sum(s[t].fmeasure for s in scores) / len(scores) for t in ROUGE_TYPES}


def test_ascii_text_equals_rouge_score_with_its_default_tokenizer():
    assert rouge_scores(*ASCII) == pytest.approx(library_means(*ASCII), abs=1e-12)
    assert rouge_scores(*ASCII)["rouge1"] > 0.3  # not a degenerate fixture


@pytest.mark.parametrize(
    "hypothesis, reference, expected",
    [
        # unigrams 3 of 4 / 3 of 3; bigrams 1 of 3 / 1 of 2; LCS "le café chaud"
        ("le café est chaud", "le café chaud", {"rouge1": 6 / 7, "rouge2": 0.4, "rougeL": 6 / 7}),
        # unigrams 2 of 2 / 2 of 4; bigrams 1 of 1 / 1 of 3; LCS 2
        ("кошка сидит", "кошка сидит на ковре", {"rouge1": 2 / 3, "rouge2": 0.5, "rougeL": 2 / 3}),
        ("", "кошка сидит", {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}),
    ],
)
def test_non_ascii_words_count(hypothesis, reference, expected):
    assert rouge_scores([hypothesis], [reference]) == pytest.approx(expected, abs=1e-12)


def test_the_library_default_would_drop_non_ascii_letters():
    # Its tokenizer reads "café" as "caf" and Cyrillic as nothing: the reason for ours.
    assert library_means(["кошка сидит"], ["кошка сидит на ковре"])["rouge1"] == 0.0


def test_rouge_needs_matching_non_empty_lists():
    with pytest.raises(ValueError, match="Received: 1 hypotheses, 2 references"):
        rouge_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        rouge_scores([], [])

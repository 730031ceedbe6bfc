"""ROUGE-1, ROUGE-2 and ROUGE-L F-measures of generated texts, as rouge-score computes them."""

import re

from nltk.stem import porter
from rouge_score import rouge_scorer, tokenizers

from tfllm.evaluation.pairs import check_one_reference_each

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# Runs of letters and digits in any script: rouge-score's own tokenizer keeps only [a-z0-9]
# and so drops every accented or non-Latin character.
_WORD = re.compile(r"[^\W_]+")


class _UnicodeTokenizer(tokenizers.Tokenizer):
    """rouge-score's default tokenization, with letters and digits of every script kept.

    Lowercase, split into runs of letters and digits, Porter-stem words longer than 3
    characters. On ASCII text it gives the same tokens as rouge-score's default tokenizer.
    """

    def __init__(self, use_stemmer):
        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text):
        words = _WORD.findall(text.lower())
        if self._stemmer is None:
            return words
        return [self._stemmer.stem(word) if len(word) > 3 else word for word in words]


def rouge_scores(hypotheses, references, use_stemmer=True):
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures over hypothesis/reference pairs.

    Each pair is scored by rouge-score's `RougeScorer` (one reference per hypothesis) and the
    F-measures are averaged over the pairs, the usual way to report ROUGE. Words are runs of
    letters and digits of any script, so accented and non-Latin text counts (rouge-score's
    default tokenizer would drop it); text without spaces between words (Chinese, Japanese)
    should be segmented first. An empty hypothesis or reference scores 0.

    Args:
        hypotheses: list of str, the generated texts.
        references: list of str, one reference per hypothesis.
        use_stemmer: bool. Porter-stem words longer than 3 characters (rouge-score's option).
            Defaults to `True`.

    Returns:
        `{"rouge1": float, "rouge2": float, "rougeL": float}`, each in [0, 1].

    Example:

    >>> rouge_scores(["the cat sat"], ["the cat sat down"])["rouge1"]
    0.8571428571428571
    """
    hypotheses, references = list(hypotheses), list(references)
    check_one_reference_each("rouge_scores", hypotheses, references)
    if not hypotheses:
        raise ValueError("rouge_scores needs at least one hypothesis/reference pair. Received: 0 pairs")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_UnicodeTokenizer(use_stemmer))
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        scores = scorer.score(target=reference, prediction=hypothesis)
        for rouge_type in ROUGE_TYPES:
            totals[rouge_type] += scores[rouge_type].fmeasure
    return {rouge_type: total / len(hypotheses) for rouge_type, total in totals.items()}

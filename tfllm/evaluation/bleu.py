"""Corpus BLEU and chrF of generated texts, as sacrebleu computes them."""

import sacrebleu

from tfllm.evaluation.pairs import check_one_reference_each


def bleu_score(hypotheses, references):
    """sacrebleu's corpus BLEU with one reference per hypothesis and its default settings.

    The defaults are the usual reporting settings: 13a tokenization (language-independent, it
    does not segment Chinese or Japanese; pre-tokenize such text), mixed case, exponential
    smoothing. An empty hypothesis is allowed and contributes no n-gram matches.

    Args:
        hypotheses: list of str, the generated texts.
        references: list of str, one reference per hypothesis.

    Returns:
        `{"bleu": float in [0, 100], "bleu_signature": str}`; the signature names the exact
        settings and sacrebleu version, so that scores can be compared.

    Example:

    >>> round(bleu_score(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"], 2)
    100.0
    """
    return _corpus_score(sacrebleu.metrics.BLEU(), "bleu", hypotheses, references)


def chrf_score(hypotheses, references):
    """sacrebleu's corpus chrF (character 6-grams, beta 2) with one reference per hypothesis.

    Character n-grams need no word tokenization, so chrF also suits languages without spaces
    and rewards partly right words (inflections, identifiers) that BLEU scores as wrong.

    Returns:
        `{"chrf": float in [0, 100], "chrf_signature": str}`.

    Example:

    >>> round(chrf_score(["the cat sat on the mat"], ["the cat sat on the mat"])["chrf"], 2)
    100.0
    """
    return _corpus_score(sacrebleu.metrics.CHRF(), "chrf", hypotheses, references)


def _corpus_score(metric, name, hypotheses, references):
    """`{name: score, name_signature: settings}` of a sacrebleu corpus metric, one reference each."""
    hypotheses, references = list(hypotheses), list(references)
    check_one_reference_each(f"{name}_score", hypotheses, references)
    score = metric.corpus_score(hypotheses, [references])
    return {name: float(score.score), f"{name}_signature": str(metric.get_signature())}

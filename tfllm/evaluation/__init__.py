"""Evaluation metrics: language-model scores over text and over targets, BLEU, chrF, ROUGE and label
scores of generations."""

from tfllm.evaluation.bleu import bleu_score, chrf_score
from tfllm.evaluation.label_scores import label_scores
from tfllm.evaluation.pairs import is_pairs_file, read_pairs
from tfllm.evaluation.rouge import ROUGE_TYPES, rouge_scores
from tfllm.evaluation.target_scorer import score_targets
from tfllm.evaluation.text_scorer import TextScorer

__all__ = [
    "ROUGE_TYPES",
    "TextScorer",
    "bleu_score",
    "chrf_score",
    "is_pairs_file",
    "label_scores",
    "read_pairs",
    "rouge_scores",
    "score_targets",
]

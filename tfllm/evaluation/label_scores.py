"""Accuracy and macro-F1 of generated texts read as class labels, computed by Keras metrics."""

import keras
import numpy as np

from tfllm.evaluation.pairs import check_one_reference_each


def label_scores(predictions, references):
    """Exact-match accuracy and macro-averaged F1 of predicted labels.

    Each text is a label once stripped of surrounding whitespace; a prediction is right when
    it equals its reference exactly. The classes are every label seen in the references or the
    predictions, so a prediction outside the reference labels is a class of its own with F1 0,
    as in scikit-learn's `f1_score(average="macro")`. Both numbers come from Keras's
    `Accuracy` and `F1Score(average="macro")` metrics.

    Args:
        predictions: list of str, the generated texts.
        references: list of str, the expected label of each.

    Returns:
        `{"accuracy": float, "macro_f1": float}`, each in [0, 1].

    Example:

    >>> label_scores(["yes", "no", "no"], ["yes", "no", "yes"])["accuracy"]
    0.6666666865348816
    """
    predictions = [text.strip() for text in predictions]
    references = [text.strip() for text in references]
    check_one_reference_each("label_scores", predictions, references, names=("prediction", "predictions"))
    if not predictions:
        raise ValueError("label_scores needs at least one prediction. Received: 0 predictions")
    classes = {label: i for i, label in enumerate(sorted(set(references) | set(predictions)))}
    true_ids = np.array([classes[label] for label in references])
    predicted_ids = np.array([classes[label] for label in predictions])
    accuracy = keras.metrics.Accuracy()
    accuracy.update_state(true_ids, predicted_ids)
    f1 = keras.metrics.F1Score(average="macro")
    identity = np.eye(len(classes), dtype=np.float32)  # one-hot rows
    f1.update_state(identity[true_ids], identity[predicted_ids])
    return {"accuracy": float(accuracy.result()), "macro_f1": float(f1.result())}

import pytest

from tfllm.evaluation import label_scores


def test_accuracy_and_macro_f1_by_hand():
    # yes: P=1 R=1/2 F1=2/3; no: P=1/2 R=1 F1=2/3.
    scores = label_scores(["yes", " no\n", "no"], ["yes", "no", "yes"])
    assert scores["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert scores["macro_f1"] == pytest.approx(2 / 3, abs=1e-6)


def test_a_prediction_outside_the_labels_is_its_own_class():
    # Classes maybe, no, yes: F1 0, 0 and 2/3.
    scores = label_scores(["yes", "maybe", "no"], ["yes", "no", "yes"])
    assert scores["accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert scores["macro_f1"] == pytest.approx(2 / 9, abs=1e-6)


def test_label_scores_needs_matching_non_empty_lists():
    with pytest.raises(ValueError, match="Received: 1 predictions, 2 references"):
        label_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        label_scores([], [])

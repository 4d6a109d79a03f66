"""Balanced accuracy, macro F1 and the majority baseline on an imbalanced case worked by hand."""

import pytest

from transferlab.metrics import classification_metrics


def test_imbalanced_case_by_hand():
    # 8 of class a, 2 of class b; the model answers "a" always except once right on b.
    labels = [0] * 8 + [1] * 2
    predictions = [0] * 8 + [1, 0]
    m = classification_metrics(labels, predictions, ("a", "b"))
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["majority_baseline"] == pytest.approx(0.8)
    assert m["per_class"]["a"] == {"precision": pytest.approx(8 / 9), "recall": 1.0, "f1": pytest.approx(16 / 17), "support": 8}
    assert m["per_class"]["b"]["precision"] == 1.0 and m["per_class"]["b"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx((16 / 17 + 2 / 3) / 2)
    assert m["confusion_matrix"] == [[8, 0], [1, 1]]


def test_a_class_absent_from_the_labels_does_not_enter_the_means():
    m = classification_metrics([0, 0, 1], [0, 0, 2], ("a", "b", "c"))
    assert m["balanced_accuracy"] == pytest.approx(0.5) and m["per_class"]["c"]["support"] == 0

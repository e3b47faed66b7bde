"""The evaluation report, in the Factory's `log` shape.

    {"avg": {"precision", "recall", "f1-score", "support"},
     "details": [{"precision", "recall", "f1-score", "support", "no": "<class label>"}, ...]}

`avg` is the support-weighted average (scikit-learn's "weighted avg"). As in scikit-learn's
classification_report, a class gets a row when it occurs in the gold labels or in the
predictions. Metrics are plain numbers rounded to 4 places; the Factory formats them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

DIGITS = 4


def natural_key(label: str) -> tuple[Any, ...]:
    """Order labels as people expect: "2" before "10", then text labels alphabetically."""
    if re.fullmatch(r"-?\d+", label):
        return (0, int(label), label)
    return (1, label.lower(), label)


def classification_report(
    gold: np.ndarray, predicted: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Per-class and weighted precision/recall/F1 of integer class ids into `labels`."""
    gold = np.asarray(gold, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if gold.shape != predicted.shape:
        raise ValueError("gold and predicted differ in length")
    k = len(labels)
    confusion = np.bincount(gold * k + predicted, minlength=k * k).reshape(k, k)
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    precision = _ratio(true_positive, predicted_count)
    recall = _ratio(true_positive, support)
    f1 = _ratio(2 * precision * recall, precision + recall)

    details = [
        {
            "precision": round(float(precision[i]), DIGITS),
            "recall": round(float(recall[i]), DIGITS),
            "f1-score": round(float(f1[i]), DIGITS),
            "support": int(support[i]),
            "no": labels[i],
        }
        for i in sorted(range(k), key=lambda i: natural_key(labels[i]))
        if support[i] or predicted_count[i]
    ]
    total = int(support.sum())
    weights = support / total if total else np.zeros(k)
    avg = {
        "precision": round(float(weights @ precision), DIGITS),
        "recall": round(float(weights @ recall), DIGITS),
        "f1-score": round(float(weights @ f1), DIGITS),
        "support": total,
    }
    return {"avg": avg, "details": details}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, with 0 where the denominator is 0 (scikit-learn's choice)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def majority_class(train_gold: np.ndarray, n_classes: int) -> int:
    """The most frequent training class (the lowest id on a tie)."""
    return int(np.argmax(np.bincount(np.asarray(train_gold, dtype=np.int64), minlength=n_classes)))


def majority_baseline(
    train_gold: np.ndarray, eval_gold: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """The report of a model that always answers the most frequent training class."""
    majority = majority_class(train_gold, len(labels))
    return classification_report(eval_gold, np.full(len(eval_gold), majority), labels)

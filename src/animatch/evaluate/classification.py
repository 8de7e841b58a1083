"""Binary classification metrics over raw scores: ROC-AUC (rank statistic) and thresholded accuracy.

`roc_auc` is the Mann-Whitney U statistic divided by (positives x negatives): the probability that a random
positive scores higher than a random negative, ties counting one half. It uses average ranks, so tied
scores (a 1-10 judge ties a lot) are handled exactly, in O(n log n), with no scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of the first member of each distinct value
    return (first + (counts + 1) / 2.0)[inverse]


def roc_auc(scores: Sequence[float], labels: Sequence[bool | int]) -> float | None:
    """Area under the ROC curve of `scores` for the binary `labels`; None without both classes."""
    labels = np.asarray(labels, dtype=bool)
    if len(labels) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def threshold_accuracy(scores: Sequence[float | None], labels: Sequence[bool | int], threshold: float) -> float | None:
    """Fraction of items whose verdict (score >= threshold) equals the label; a missing score is wrong.
    None for no items."""
    if len(labels) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if not len(labels):
        return None
    right = sum(s is not None and (s >= threshold) == bool(y) for s, y in zip(scores, labels))
    return right / len(labels)

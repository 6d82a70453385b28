"""Evaluate: pairwise precision and recall of groups against true person labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairScores:
    """Pairs of rows in one group vs pairs showing one person."""

    precision: float
    recall: float
    true_pairs: int  # same group and same person
    group_pairs: int  # same group
    person_pairs: int  # same person


def pair_precision_recall(groups: np.ndarray, truth: np.ndarray) -> PairScores:
    """Pairwise precision (same-group pairs that are one person) and recall (same-person pairs
    put in one group), counted from the label contingency table."""
    g = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    t = np.unique(np.asarray(truth), return_inverse=True)[1].ravel()
    if len(g) != len(t):
        raise ValueError(f"groups has {len(g)} rows, truth has {len(t)}")

    def pairs(counts: np.ndarray) -> int:
        c = counts.astype(np.int64)
        return int((c * (c - 1) // 2).sum())

    _, joint = np.unique(g * (t.max(initial=0) + 1) + t, return_counts=True)
    true_pairs = pairs(joint)
    group_pairs = pairs(np.bincount(g))
    person_pairs = pairs(np.bincount(t))
    precision = true_pairs / group_pairs if group_pairs else 1.0
    recall = true_pairs / person_pairs if person_pairs else 1.0
    return PairScores(precision, recall, true_pairs, group_pairs, person_pairs)

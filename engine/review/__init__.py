"""The data doctor: label issues, near-duplicates, outliers and confusable classes, found from cached features.

It may import ``engine.core``, ``engine.data``, ``augment`` and ``engine.models``; nothing of training,
search, evaluation or export. The model-free findings work on plain arrays, so each can be tested apart.
"""

from engine.review.features import ReviewFeatures, review_features
from engine.review.findings import FINDING_KINDS, Finding, ReviewReport, review_dataset
from engine.review.label_issues import LabelIssue, LabelIssues, find_label_issues, out_of_fold_probabilities
from engine.review.similarity import (
    ConfusablePair,
    NearDuplicate,
    Outlier,
    confusable_pairs,
    find_near_duplicates,
    find_outliers,
)

__all__ = [
    "FINDING_KINDS",
    "ConfusablePair",
    "Finding",
    "LabelIssue",
    "LabelIssues",
    "NearDuplicate",
    "Outlier",
    "ReviewFeatures",
    "ReviewReport",
    "confusable_pairs",
    "find_label_issues",
    "find_near_duplicates",
    "find_outliers",
    "out_of_fold_probabilities",
    "review_dataset",
    "review_features",
]

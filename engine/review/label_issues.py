"""Suspected label errors by confident learning on out-of-fold predictions of a linear model on features.

Each photo is judged by a logistic regression that never saw it (stratified k-fold), and cleanlab's
``find_label_issues`` (Northcutt et al., confident learning) picks the photos whose given label the
predictions contradict: a well-kept reference implementation rather than a re-derivation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from cleanlab.filter import find_label_issues as cleanlab_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from engine.review.similarity import unit_length

MOST_FOLDS = 5
FEWEST_FOLDS = 2
# Measured on the demo photos (Lite0 features, 10% flipped labels, 5x20 and 10x50 photos, 3 seeds each):
# C=1 with cleanlab's "both" filter gave the best precision at a recall of about 0.8; C=10 or 100
# over-fit the few photos per fold, and the other filters traded recall for no precision.
INVERSE_REGULARISATION = 1.0
CLEANLAB_FILTER = "both"
# Of cleanlab's issues, only those whose suggested class the out-of-fold model finds at least 3 times as likely
# as the given one are shown. Measured with python -m bench.label_noise (10% flipped, 3 seeds, Lite0 features):
# on 2,000 Fashion-MNIST train photos at 50 per class precision rises from 0.51 to 0.78 while recall falls from
# 0.82 to 0.75 (on the demo photos: 0.53 -> 0.89 and 0.83 -> 0.75). The issues left out are mostly photos the
# linear model gets wrong between two close classes (shirt / t-shirt), which cost a user time for little. A
# ratio rather than a floor on the given class's probability: with few photos per class the probabilities are
# softer, and a floor found nothing at all on 20 photos per class.
LEAST_ODDS = 3.0
TOP_CLASSES_IN_REASON = 3


@dataclass(frozen=True)
class LabelIssue:
    """A photo whose given label an unseen-data prediction contradicts.

    Attributes:
        index: the photo's row in the features.
        given: its given class index.
        suggested: the class the out-of-fold prediction favours.
        score: 1 - the predicted probability of the given class (higher is more suspicious), in [0, 1].
        rank: 1 for the most suspicious photo.
        top: the most probable classes and their probabilities, most probable first.
    """

    index: int
    given: int
    suggested: int
    score: float
    rank: int
    top: tuple[tuple[int, float], ...]

    def reason(self, classes: Sequence[str]) -> str:
        """In words, e.g. ``looks like 'shirt' to a model that never saw it: 94% shirt, 3% coat``."""
        shares = ", ".join(f"{probability:.0%} {classes[index]}" for index, probability in self.top)
        return f"looks like '{classes[self.suggested]}' to a model that never saw it: {shares}"


@dataclass
class LabelIssues:
    """The label issues of a dataset and how they were found.

    Attributes:
        issues: ranked, most suspicious first.
        probabilities: ``(N, C)`` out-of-fold class probabilities; rows of skipped photos are NaN.
        folds: the folds used (0 when too few classes were left to judge).
        notes: classes skipped or fewer folds used, in words.
    """

    issues: list[LabelIssue]
    probabilities: np.ndarray
    folds: int
    notes: list[str] = field(default_factory=list)


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = MOST_FOLDS, seed: int = 0
) -> np.ndarray:
    """Class probabilities of every photo from a logistic regression trained on the other folds.

    Args:
        features: ``(N, D)`` float32; L2-normalised here.
        labels: ``(N,)`` class indices; every class present has at least ``folds`` photos.
        num_classes: columns of the result; classes absent from ``labels`` get probability 0.
        folds: stratified folds, at least 2.
        seed: the fold shuffle's seed.

    Returns:
        ``(N, num_classes)`` float64, rows summing to 1.
    """
    unit = unit_length(features)
    probabilities = np.zeros((len(labels), num_classes))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_rows, held_out_rows in splitter.split(unit, labels):
        model = LogisticRegression(C=INVERSE_REGULARISATION, max_iter=2000)
        model.fit(unit[train_rows], labels[train_rows])
        probabilities[np.ix_(held_out_rows, model.classes_)] = model.predict_proba(unit[held_out_rows])
    return probabilities


def find_label_issues(
    features: np.ndarray, labels: np.ndarray, classes: Sequence[str], *, seed: int = 0,
    least_odds: float = LEAST_ODDS,
) -> LabelIssues:
    """Rank the photos whose given label looks wrong, by confident learning on out-of-fold probabilities.

    Classes with a single photo cannot be cross-validated: their photos are skipped and named in
    the notes. With fewer photos in a class than ``MOST_FOLDS``, fewer folds are used (at least 2).

    Args:
        features: ``(N, D)`` float32 pooled features.
        labels: ``(N,)`` given class indices into ``classes``.
        classes: class names.
        seed: seed of the folds.
        least_odds: an issue is kept only when the suggested class's out-of-fold probability is at least
            ``least_odds`` times the given class's (0 keeps every issue cleanlab finds).
    """
    counts = Counter(labels.tolist())
    notes = [f"class '{classes[index]}' has only 1 photo: too few to cross-validate, its label is not checked"
             for index in sorted(index for index, count in counts.items() if count < FEWEST_FOLDS)]
    judged_classes = sorted(index for index, count in counts.items() if count >= FEWEST_FOLDS)
    probabilities = np.full((len(labels), len(classes)), np.nan)
    if len(judged_classes) < 2:
        notes.append("fewer than 2 classes with 2 or more photos: labels not checked")
        return LabelIssues([], probabilities, 0, notes)
    folds = min(MOST_FOLDS, min(counts[index] for index in judged_classes))
    if folds < MOST_FOLDS:
        smallest = [classes[index] for index in judged_classes if counts[index] == folds]
        notes.append(f"{folds} folds instead of {MOST_FOLDS}: class '{smallest[0]}' has only {folds} photos")
    rows = np.flatnonzero(np.isin(labels, judged_classes))
    # cleanlab wants the judged classes numbered 0..K-1, each present.
    compact = np.searchsorted(judged_classes, labels[rows])
    judged = out_of_fold_probabilities(features[rows], compact, len(judged_classes), folds=folds, seed=seed)
    probabilities[np.ix_(rows, judged_classes)] = judged
    ranked = cleanlab_label_issues(compact, judged, return_indices_ranked_by="self_confidence",
                                  filter_by=CLEANLAB_FILTER, n_jobs=1)
    doubted = [position for position in ranked.tolist()
               if judged[position].max() >= least_odds * judged[position, compact[position]]]
    issues = []
    for rank, position in enumerate(doubted, start=1):
        row = judged[position]
        best = np.argsort(row)[::-1][:TOP_CLASSES_IN_REASON]
        issues.append(LabelIssue(
            index=int(rows[position]),
            given=judged_classes[compact[position]],
            suggested=judged_classes[int(best[0])],
            score=float(1.0 - row[compact[position]]),
            rank=rank,
            top=tuple((judged_classes[int(column)], float(row[column])) for column in best if row[column] >= 0.01),
        ))
    return LabelIssues(issues, probabilities, folds, notes)

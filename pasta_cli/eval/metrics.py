"""Evaluation metrics for the GLUE tasks and CoNLL-2003, as plain functions.

All values are floats on the metric's natural scale ([0, 1] for accuracy/F1, [-1, 1] for
correlations and MCC); callers multiply by 100 for display. scikit-learn, scipy and seqeval
do the work (the `evaluate` package is avoided: it fetches metric scripts from the hub).

Names used in task configs: accuracy, f1, matthews, pearson, spearman, and for NER
entity_f1, entity_precision, entity_recall (seqeval, conlleval-style entity matching).
Which names fit which task kind, and each kind's default, are part of the task spec
(`pasta_cli.data.spec`: `KIND_METRICS`, `DEFAULTS`, `resolve_metrics`), so a task YAML may leave
`metrics` unset and a wrong name is refused before any data is read; this module only computes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats
from seqeval import metrics as seqeval
from sklearn import metrics as sklearn

from pasta_cli.data.spec import ALL_METRICS, ENTITY_METRICS
from pasta_cli.errors import PastaError


def _flat(preds, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(preds).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise PastaError(f"metrics: {p.shape[0]} predictions for {y.shape[0]} labels")
    if p.size == 0:
        raise PastaError("metrics: no examples to score")
    return p, y


def accuracy(preds, labels) -> float:
    """Fraction of predictions equal to the label."""
    p, y = _flat(preds, labels)
    return float(sklearn.accuracy_score(y, p))


def f1(preds, labels) -> float:
    """F1 of the positive class 1 (MRPC, QQP); macro F1 when there are more than two classes."""
    p, y = _flat(preds, labels)
    binary = max(int(p.max()), int(y.max())) <= 1
    return float(sklearn.f1_score(y, p, average="binary" if binary else "macro", pos_label=1, zero_division=0))


def matthews(preds, labels) -> float:
    """Matthews correlation coefficient (CoLA); 0.0 when it is undefined (a constant column)."""
    p, y = _flat(preds, labels)
    return float(sklearn.matthews_corrcoef(y, p))


def _correlation(fn, preds, labels) -> float:
    p, y = _flat(preds, labels)
    p = p.astype(np.float64)
    y = y.astype(np.float64)
    # Undefined for a constant input (e.g. an untrained regressor): report no correlation.
    if p.size < 2 or np.all(p == p[0]) or np.all(y == y[0]):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(p, y)[0])
    return 0.0 if math.isnan(value) else value


def pearson(preds, labels) -> float:
    """Pearson correlation (STS-B)."""
    return _correlation(stats.pearsonr, preds, labels)


def spearman(preds, labels) -> float:
    """Spearman rank correlation (STS-B)."""
    return _correlation(stats.spearmanr, preds, labels)


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro entity precision/recall/F1 over IOB2 tag sequences (seqeval, conlleval matching)."""
    y_true = [list(s) for s in true_tags]
    y_pred = [list(s) for s in pred_tags]
    if len(y_true) != len(y_pred):
        raise PastaError(f"metrics: {len(y_pred)} predicted sentences for {len(y_true)} labelled ones")
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise PastaError(f"metrics: sentence {i} has {len(p)} predicted tags for {len(t)} labelled words")
    if not y_true:
        raise PastaError("metrics: no sentences to score")
    return {
        "entity_f1": float(seqeval.f1_score(y_true, y_pred, zero_division=0)),
        "entity_precision": float(seqeval.precision_score(y_true, y_pred, zero_division=0)),
        "entity_recall": float(seqeval.recall_score(y_true, y_pred, zero_division=0)),
    }


_SCALAR = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: Sequence[str], preds, labels) -> dict[str, float]:
    """The named metrics as {name: value}.

    For entity_* names, preds and labels are lists of tag-string sequences (one per sentence);
    for the others, flat arrays of class ids or scores.
    """
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown:
        raise PastaError(f"unknown metric {unknown[0]!r}: choose from {', '.join(ALL_METRICS)}")
    out: dict[str, float] = {}
    if any(n in ENTITY_METRICS for n in names):
        scores = entity_scores(labels, preds)
        out.update({n: scores[n] for n in names if n in ENTITY_METRICS})
    for n in names:
        if n in _SCALAR:
            out[n] = _SCALAR[n](preds, labels)
    return {n: out[n] for n in names}

"""From a model's outputs to what a run reports: predictions, metric scores and prediction rows.

Token classification is scored and written per word: of each word only its first sub-word is
labelled (the others carry -100), so those positions alone are kept, scored by seqeval on the tag
names (conlleval's entity matching), and written as one tag per word.
"""

from __future__ import annotations

import numpy as np

from pasta_cli.data.encode import IGNORE
from pasta_cli.data.spec import Kind, SubmissionLabels
from pasta_cli.data.task import TaskData
from pasta_cli.errors import PastaError
from pasta_cli.eval import metrics


def predictions(task: TaskData, logits) -> np.ndarray:
    """Class ids (argmax), scores (regression: (N, 1) -> (N,)), or per-token tag ids (N, T)."""
    logits = np.asarray(logits)
    if task.kind == Kind.regression:
        return logits.reshape(logits.shape[0], -1)[:, 0] if logits.ndim > 1 else logits
    return logits.argmax(axis=-1)


def word_tags(preds, labels) -> tuple[list[list[int]], list[list[int]]]:
    """The labelled (first sub-word) positions of each row: (predicted ids, gold ids) per sentence."""
    pred_rows, gold_rows = [], []
    for p, y in zip(preds, labels):
        p, y = np.asarray(p).reshape(-1), np.asarray(y).reshape(-1)
        n = min(len(p), len(y))
        if np.any(y[n:] != IGNORE):
            raise PastaError(f"token predictions have {len(p)} positions, fewer than the labelled {len(y)}")
        keep = y[:n] != IGNORE
        pred_rows.append([int(v) for v in p[:n][keep]])
        gold_rows.append([int(v) for v in y[:n][keep]])
    return pred_rows, gold_rows


def compute_metrics(task: TaskData, preds, labels) -> dict[str, float]:
    """The task's metrics, {name: value} in task.metrics' order. For token classification preds
    and labels are (N, T) id arrays with -100 at unlabelled positions."""
    if task.kind == Kind.token_classification:
        if len(preds) != len(labels):
            raise PastaError(f"metrics: {len(preds)} predicted sentences for {len(labels)} labelled ones")
        pred_rows, gold_rows = word_tags(preds, labels)
        return metrics.compute(task.metrics, _names(task, pred_rows), _names(task, gold_rows))
    preds, labels = np.asarray(preds).reshape(-1), np.asarray(labels).reshape(-1)
    if task.kind == Kind.classification and (labels < 0).any():
        raise PastaError(f"{task.name}: cannot score rows without labels (label -1, an unlabelled test split)")
    return metrics.compute(task.metrics, preds, labels)


def submission_rows(task: TaskData, split: str, idx, preds, labels=None, names: bool = False) -> list[tuple]:
    """Prediction-file rows (index, prediction) as the GLUE server expects them: a class as its name
    or its id (task.submission_labels; `names`: always its name, as pasta-predict and pasta-serve write it,
    for files people read such as dev_predictions.tsv), a score as a float, a sentence's tags as 'TAG TAG ...' with
    one tag per word. Token preds are per-word id lists, or (N, T) per-token ids whose first
    sub-words are those labelled in `labels`, else those encode() recorded for `split`."""
    idx = [int(i) for i in idx]
    if len(idx) != len(preds):
        raise PastaError(f"{len(preds)} predictions for {len(idx)} indices")
    if task.kind == Kind.regression:
        return [(i, float(p)) for i, p in zip(idx, np.asarray(preds, dtype=np.float64).reshape(-1))]
    if task.kind == Kind.token_classification:
        words = _word_level(task, split, idx, preds, labels)
        return [(i, " ".join(tags)) for i, tags in zip(idx, _names(task, words))]
    preds = np.asarray(preds).reshape(-1)
    if task.submission_labels == SubmissionLabels.ids and not names:
        return [(i, int(p)) for i, p in zip(idx, preds)]
    return list(zip(idx, _names(task, [preds])[0]))


def _names(task: TaskData, rows) -> list[list[str]]:
    names = task.labels or []
    for row in rows:
        for i in row:
            if not 0 <= i < len(names):
                raise PastaError(f"prediction {int(i)} is outside the {len(names)} labels of {task.name}")
    return [[names[int(i)] for i in row] for row in rows]


def _word_level(task: TaskData, split: str, idx: list[int], preds, labels) -> list[list[int]]:
    if labels is not None:
        return word_tags(preds, labels)[0]
    if not (isinstance(preds, np.ndarray) and preds.ndim == 2):
        return [[int(t) for t in p] for p in preds]  # already one tag id per word
    if split not in task.word_starts:
        raise PastaError(f"no word positions for split {split!r}: encode() the task before writing its predictions")
    ids, starts = task.word_starts[split]
    if ids != idx:
        raise PastaError(f"the indices given are not those of the encoded {split} split")
    return [[int(preds[r, p]) for p in pos if p < preds.shape[1]] for r, pos in enumerate(starts)]

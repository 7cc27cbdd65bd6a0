"""Metrics against values worked out by hand from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pasta_cli.errors import PastaError
from pasta_cli.eval import metrics

# A binary example with a hand-counted confusion matrix:
#   idx     0 1 2 3 4 5 6 7
#   pred    1 1 1 0 0 0 1 0
#   gold    1 1 0 0 0 1 1 0
# TP = {0,1,6} = 3, FP = {2} = 1, FN = {5} = 1, TN = {3,4,7} = 3
PREDS = [1, 1, 1, 0, 0, 0, 1, 0]
GOLD = [1, 1, 0, 0, 0, 1, 1, 0]
TP, FP, FN, TN = 3, 1, 1, 3


def test_accuracy():
    assert metrics.accuracy(PREDS, GOLD) == pytest.approx((TP + TN) / 8)  # 0.75
    assert metrics.accuracy([0, 2, 1], [0, 1, 1]) == pytest.approx(2 / 3)


def test_f1_positive_class():
    precision = TP / (TP + FP)
    recall = TP / (TP + FN)
    assert metrics.f1(PREDS, GOLD) == pytest.approx(2 * precision * recall / (precision + recall))
    # asymmetric case: TP=2, FP=2, FN=1 -> F1 = 2TP / (2TP + FP + FN) = 4/7
    assert metrics.f1([1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0]) == pytest.approx(4 / 7)
    # no predicted positives: F1 is 0, not an error
    assert metrics.f1([0, 0, 0], [1, 0, 1]) == 0.0


def test_matthews():
    expected = (TP * TN - FP * FN) / math.sqrt((TP + FP) * (TP + FN) * (TN + FP) * (TN + FN))
    assert expected == pytest.approx(0.5)
    assert metrics.matthews(PREDS, GOLD) == pytest.approx(expected)
    # a skewed one: pred 1 1 0 0 0 / gold 1 0 0 0 1 -> TP=1 FP=1 FN=1 TN=2
    e2 = (1 * 2 - 1 * 1) / math.sqrt(2 * 2 * 3 * 3)
    assert metrics.matthews([1, 1, 0, 0, 0], [1, 0, 0, 0, 1]) == pytest.approx(e2)
    # constant predictions: MCC is defined as 0
    assert metrics.matthews([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0


def test_pearson_by_hand():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [2.0, 4.0, 5.0, 9.0]
    # means 2.5 and 5; deviations (-1.5,-.5,.5,1.5) and (-3,-1,0,4)
    # sum dx*dy = 4.5 + .5 + 0 + 6 = 11; sum dx^2 = 5; sum dy^2 = 26
    assert metrics.pearson(x, y) == pytest.approx(11 / math.sqrt(5 * 26))
    assert metrics.pearson(np.array(x), -np.array(y)) == pytest.approx(-11 / math.sqrt(5 * 26))


def test_spearman_by_hand():
    x = [0.1, 0.4, 0.2, 0.9]  # ranks 1 3 2 4
    y = [10, 20, 30, 40]  # ranks 1 2 3 4
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6*2 / 60
    assert metrics.spearman(x, y) == pytest.approx(0.8)
    # monotone but not linear: spearman 1, pearson below 1
    a = [1.0, 2.0, 3.0, 4.0]
    b = [1.0, 8.0, 27.0, 64.0]
    assert metrics.spearman(a, b) == pytest.approx(1.0)
    assert metrics.pearson(a, b) < 0.99


def test_correlation_of_constant_predictions_is_zero():
    assert metrics.pearson([2.5, 2.5, 2.5], [1.0, 2.0, 3.0]) == 0.0
    assert metrics.spearman([2.5, 2.5, 2.5], [1.0, 2.0, 3.0]) == 0.0


def test_entity_scores_counted_by_hand():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC"],  # PER(0-1), LOC(3)
        ["B-ORG", "O", "O"],  # ORG(0)
        ["B-PER", "I-PER"],  # PER(0-1)
    ]
    pred = [
        ["B-PER", "I-PER", "O", "B-ORG"],  # PER(0-1) right, ORG(3) wrong type
        ["B-ORG", "O", "B-MISC"],  # ORG(0) right, MISC(2) spurious
        ["B-PER", "O"],  # PER(0) wrong span
    ]
    # gold entities 4, predicted 5, exact matches 2
    scores = metrics.entity_scores(gold, pred)
    assert scores["entity_precision"] == pytest.approx(2 / 5)
    assert scores["entity_recall"] == pytest.approx(2 / 4)
    assert scores["entity_f1"] == pytest.approx(2 * 2 / (5 + 4))
    perfect = metrics.entity_scores(gold, gold)
    assert perfect == {"entity_f1": 1.0, "entity_precision": 1.0, "entity_recall": 1.0}
    # nothing predicted: zeros, not an exception
    none = metrics.entity_scores(gold, [["O"] * len(s) for s in gold])
    assert none["entity_f1"] == 0.0 and none["entity_precision"] == 0.0


def test_compute_dispatches_and_orders():
    out = metrics.compute(["matthews", "accuracy"], PREDS, GOLD)
    assert list(out) == ["matthews", "accuracy"]
    assert out == {"matthews": pytest.approx(0.5), "accuracy": pytest.approx(0.75)}
    ner = metrics.compute(["entity_f1", "entity_recall"], [["B-PER", "O"]], [["B-PER", "B-LOC"]])
    assert ner == {"entity_f1": pytest.approx(2 / 3), "entity_recall": pytest.approx(0.5)}
    assert all(isinstance(v, float) for v in out.values())


def test_bad_inputs_raise():
    with pytest.raises(PastaError, match="unknown metric 'bleu'"):
        metrics.compute(["bleu"], [1], [1])
    with pytest.raises(PastaError, match="3 predictions for 2 labels"):
        metrics.accuracy([1, 0, 1], [1, 0])
    with pytest.raises(PastaError, match="sentence 0"):
        metrics.entity_scores([["O", "O"]], [["O"]])

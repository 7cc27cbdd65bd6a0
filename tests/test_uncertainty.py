"""The paired bootstrap of a table's gaps (pasta_cli.paper.uncertainty) against independent computations:
the metric from summed counts equals scikit-learn's, scipy's and seqeval's on the same rows, and the interval
agrees with a plain resampling loop that scores every replicate with pasta_cli.eval.metrics."""

import numpy as np
import pytest

from pasta_cli.errors import PastaError
from pasta_cli.eval import metrics
from pasta_cli.files import write_tsv
from pasta_cli.paper import uncertainty

RNG = np.random.default_rng(0)
TAGS = ["O", "B-PER", "I-PER", "B-LOC"]


def fake_run(folder, preds, golds, labels=None):
    folder.mkdir(parents=True)
    write_tsv(folder / "dev_predictions.tsv", ("index", "prediction", "label"),
              [(i, p, g) for i, (p, g) in enumerate(zip(preds, golds))])
    if labels:
        (folder / "config.yaml").write_text("task:\n  labels: [" + ", ".join(labels) + "]\n")
    return folder


def noisy(golds, flip):
    """Predictions that agree with the gold labels except where a coin with P(flip) says otherwise."""
    return [g if RNG.random() > flip else 1 - g for g in golds]


def sentence(n_words):
    return [str(RNG.choice(TAGS, p=[0.6, 0.15, 0.1, 0.15])) for _ in range(n_words)]


@pytest.mark.parametrize("metric", ["accuracy", "f1", "matthews"])
def test_counts_give_the_classification_metric(metric):
    golds = list(RNG.integers(0, 2, 300))
    preds = noisy(golds, 0.3)
    table = uncertainty.counts(metric, [str(p) for p in preds], [str(g) for g in golds], None)
    expected = metrics.compute([metric], np.array(preds), np.array(golds))[metric]
    assert uncertainty.score(metric, table) == pytest.approx(expected, abs=1e-12)
    rows = RNG.integers(0, 300, 300)  # a resample: with repeats
    expected = metrics.compute([metric], np.array(preds)[rows], np.array(golds)[rows])[metric]
    assert uncertainty.score(metric, table, rows) == pytest.approx(expected, abs=1e-12)


def test_matthews_of_three_named_classes_and_of_a_constant_prediction():
    names = ["a", "b", "c"]
    golds = [names[i] for i in RNG.integers(0, 3, 200)]
    preds = [g if RNG.random() > 0.4 else names[RNG.integers(0, 3)] for g in golds]
    table = uncertainty.counts("matthews", preds, golds, names)
    ids = {n: i for i, n in enumerate(names)}
    expected = metrics.matthews([ids[p] for p in preds], [ids[g] for g in golds])
    assert uncertainty.score("matthews", table) == pytest.approx(expected, abs=1e-12)
    constant = uncertainty.counts("matthews", ["a"] * 200, golds, names)
    assert uncertainty.score("matthews", constant) == 0.0 == metrics.matthews([0] * 200, [ids[g] for g in golds])


@pytest.mark.parametrize("metric", ["pearson", "spearman"])
def test_correlations_on_drawn_pairs(metric):
    golds = RNG.uniform(0, 5, 150)
    preds = np.round(golds + RNG.normal(0, 1.5, 150), 1)  # rounded: ties, as a resample has
    table = uncertainty.counts(metric, [str(p) for p in preds], [str(g) for g in golds], None)
    rows = RNG.integers(0, 150, 150)
    expected = metrics.compute([metric], preds[rows], golds[rows])[metric]
    assert uncertainty.score(metric, table, rows) == pytest.approx(expected, abs=1e-9)


def test_entity_counts_give_seqeval():
    golds = [sentence(int(RNG.integers(1, 12))) for _ in range(120)]
    preds = [[t if RNG.random() > 0.25 else str(RNG.choice(TAGS)) for t in s] for s in golds]
    table = uncertainty.counts("entity_f1", [" ".join(p) for p in preds], [" ".join(g) for g in golds], None)
    rows = RNG.integers(0, 120, 120)
    expected = metrics.entity_scores([golds[r] for r in rows], [preds[r] for r in rows])
    for name in ("entity_f1", "entity_precision", "entity_recall"):
        got = uncertainty.from_counts(name, table[rows].sum(axis=0))
        assert got == pytest.approx(expected[name], abs=1e-12), name


def naive_gap_interval(a, b, metric, n_resamples, seed=0):
    """The same paired bootstrap written plainly: draw examples and seeds, score each row with eval.metrics."""
    rng = np.random.default_rng(seed)
    n, s = len(a[0][1]), len(a)
    gaps = []
    for _ in range(n_resamples):
        rows, seeds = rng.integers(0, n, n), rng.integers(0, s, s)
        gaps.append(np.mean([metrics.matthews(np.array(a[k][0])[rows], np.array(a[k][1])[rows])
                             - metrics.matthews(np.array(b[k][0])[rows], np.array(b[k][1])[rows]) for k in seeds]))
    return np.percentile(gaps, [2.5, 97.5])


def test_paired_gap_agrees_with_a_plain_resampling_loop(tmp_path):
    golds = list(RNG.integers(0, 2, 250))
    a, b, a_dirs, b_dirs = [], [], {}, {}
    for seed in (1, 2, 3):  # row A is better (less noise) than row B on every seed
        pa, pb = noisy(golds, 0.15), noisy(golds, 0.35)
        a.append((pa, golds))
        b.append((pb, golds))
        a_dirs[seed] = fake_run(tmp_path / f"a{seed}", pa, golds)
        b_dirs[seed] = fake_run(tmp_path / f"b{seed}", pb, golds)
    gap = uncertainty.paired_gap(a_dirs, b_dirs, "matthews", n_resamples=1000)
    point = 100 * np.mean([metrics.matthews(pa, g) - metrics.matthews(pb, g) for (pa, g), (pb, _) in zip(a, b)])
    assert gap.point == pytest.approx(point, abs=1e-9)
    low, high = 100 * naive_gap_interval(a, b, "matthews", 500)
    assert gap.low == pytest.approx(low, abs=2.5) and gap.high == pytest.approx(high, abs=2.5)
    assert gap.low < gap.point < gap.high and gap.excludes_zero and (gap.seeds, gap.examples) == (3, 250)
    # the other way round: the same interval, negated
    back = uncertainty.paired_gap(b_dirs, a_dirs, "matthews", n_resamples=1000)
    assert back.point == pytest.approx(-gap.point) and back.high < 0


def test_identical_rows_have_a_zero_width_interval_at_zero(tmp_path):
    golds = list(RNG.integers(0, 2, 100))
    preds = noisy(golds, 0.3)
    runs = {7: fake_run(tmp_path / "a", preds, golds)}
    same = {7: fake_run(tmp_path / "b", preds, golds)}
    gap = uncertainty.paired_gap(runs, same, "accuracy", n_resamples=200)
    assert (gap.point, gap.low, gap.high) == (0.0, 0.0, 0.0) and not gap.excludes_zero


def test_runs_without_labels_or_on_other_examples_are_refused(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    write_tsv(old / "dev_predictions.tsv", ("index", "prediction"), [(0, 1), (1, 0)])
    new = fake_run(tmp_path / "new", [1, 0], [1, 1])
    with pytest.raises(PastaError, match="no label column"):
        uncertainty.paired_gap({1: old}, {1: new}, "accuracy")
    other = fake_run(tmp_path / "other", [1, 0, 1], [1, 1, 0])
    with pytest.raises(PastaError, match="different dev examples"):
        uncertainty.paired_gap({1: new}, {1: other}, "accuracy")
    with pytest.raises(PastaError, match="no seed in common"):
        uncertainty.paired_gap({1: new}, {2: new}, "accuracy")

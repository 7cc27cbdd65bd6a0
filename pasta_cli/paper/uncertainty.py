"""How sure a gap between two rows is: a paired bootstrap over dev examples and seeds (scipy's `bootstrap`).

A gap is mean over seeds of (row A's score - row B's score), both scored on the same dev examples. One
bootstrap replicate draws the dev examples with replacement (the same draw for both rows: paired) and,
independently, the seeds with replacement; scipy resamples the two as two samples (`paired=False`
between them) and gives the 95% percentile interval. One row's own score gets the same interval, with
nothing subtracted (`score_interval`, the frontier's error bars).

Each run's dev_predictions.tsv (index, prediction, label) is turned once into per-example counts whose
sums give the metric exactly (a confusion-matrix cell per example; for entities, per-sentence true
positives, predicted and gold entities, seqeval's matching), so a replicate is a sum, not a metric call:
thousands of replicates take seconds. Correlations (STS-B) are computed on the drawn pairs directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from pasta_cli.data.spec import CLASSIFICATION_METRICS, ENTITY_METRICS, REGRESSION_METRICS
from pasta_cli.errors import PastaError
from pasta_cli.run_folder import CONFIG, DEV_PREDICTIONS, read_config, read_predictions

CONFUSION_METRICS = CLASSIFICATION_METRICS  # scored from the dev predictions' confusion of labels
CORRELATIONS = REGRESSION_METRICS


@dataclass(frozen=True)
class Gap:
    """Row A minus row B (x100), or one row's score (`score_interval`), with its 95% bootstrap interval, over
    `seeds` seeds and `examples` examples."""

    point: float
    low: float
    high: float
    seeds: int
    examples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


# ------------------------------------------------------------------------ per-example counts, and the metric
def _ids(values: list[str], labels: list[str] | None) -> np.ndarray:
    """Class ids from a prediction file's column: ids as written, or names by the task's label list."""
    if all(v.lstrip("-").isdigit() for v in values):
        return np.asarray([int(v) for v in values])
    if not labels:
        raise PastaError(f"{DEV_PREDICTIONS}: class names {sorted(set(values))[:3]} but no label list to number them")
    index = {name: i for i, name in enumerate(labels)}
    return np.asarray([index[v] for v in values])


def counts(metric: str, preds: list[str], golds: list[str], labels: list[str] | None) -> np.ndarray:
    """(examples, k) numbers whose column sums over any subset of examples give the metric (`from_counts`);
    for a correlation, the (prediction, gold) pairs themselves."""
    if metric in CORRELATIONS:
        return np.stack([np.asarray(preds, dtype=float), np.asarray(golds, dtype=float)], axis=1)
    if metric in ENTITY_METRICS:
        from seqeval.metrics.sequence_labeling import get_entities
        rows = []
        for p, g in zip(preds, golds):
            pe, ge = set(get_entities(p.split())), set(get_entities(g.split()))
            rows.append((len(pe & ge), len(pe), len(ge)))
        return np.asarray(rows, dtype=float)
    if metric in CONFUSION_METRICS:
        p, g = _ids(preds, labels), _ids(golds, labels)
        k = int(max(p.max(), g.max(), len(labels or []) - 1)) + 1
        out = np.zeros((len(p), k * k))
        out[np.arange(len(p)), g * k + p] = 1  # cell (gold, predicted) of the confusion matrix
        return out
    raise PastaError(f"no bootstrap for metric {metric!r}: choose from "
                     f"{', '.join(CONFUSION_METRICS + ENTITY_METRICS + CORRELATIONS)}")


def _ratio(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def from_counts(metric: str, summed: np.ndarray) -> np.ndarray:
    """The metric from summed counts (..., k): vectorised over any leading axes."""
    if metric in ENTITY_METRICS:
        tp, n_pred, n_gold = summed[..., 0], summed[..., 1], summed[..., 2]
        precision, recall = _ratio(tp, n_pred), _ratio(tp, n_gold)
        return {"entity_precision": precision, "entity_recall": recall,
                "entity_f1": _ratio(2 * precision * recall, precision + recall)}[metric]
    k = int(round(np.sqrt(summed.shape[-1])))
    c = summed.reshape(*summed.shape[:-1], k, k)   # rows: gold, columns: predicted
    n = c.sum(axis=(-2, -1))
    correct = np.trace(c, axis1=-2, axis2=-1)
    if metric == "accuracy":
        return _ratio(correct, n)
    if metric == "f1":  # of class 1, as eval.metrics.f1 for two classes
        tp, fp, fn = c[..., 1, 1], c[..., 0, 1], c[..., 1, 0]
        return _ratio(2 * tp, 2 * tp + fp + fn)
    # Matthews for any number of classes (Gorodkin's R_K, as scikit-learn computes it); 0 when undefined
    t, p = c.sum(axis=-1), c.sum(axis=-2)
    cov_ytyp = correct * n - (t * p).sum(axis=-1)
    cov_ypyp = n ** 2 - (p * p).sum(axis=-1)
    cov_ytyt = n ** 2 - (t * t).sum(axis=-1)
    return _ratio(cov_ytyp, np.sqrt(cov_ypyp * cov_ytyt))


def _correlation(metric: str, pairs: np.ndarray) -> np.ndarray:
    """Pearson or Spearman of (..., n, 2) pairs along the examples axis; 0 for a constant column."""
    x, y = pairs[..., 0], pairs[..., 1]
    if metric == "spearman":
        x, y = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    return _ratio((x * y).sum(axis=-1), np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1)))


def score(metric: str, table: np.ndarray, rows=None) -> np.ndarray:
    """The metric of one run on the examples `rows` ((..., m) indices; all by default)."""
    picked = table if rows is None else table[rows]
    if metric in CORRELATIONS:
        return _correlation(metric, picked)
    return from_counts(metric, picked.sum(axis=-2))


# ------------------------------------------------------------------------ runs in, gaps out
def read_run(run_dir: str | Path, metric: str) -> tuple[list[str], np.ndarray]:
    """A run's dev examples (their index, in file order) and their counts for `metric`."""
    path = Path(run_dir) / DEV_PREDICTIONS
    rows = read_predictions(path)
    if not rows or rows[0][:3] != ["index", "prediction", "label"]:
        raise PastaError(f"{path} has no label column: it was written before pasta-cli recorded dev labels; "
                         "re-run the cell to get a confidence interval")
    config = Path(run_dir) / CONFIG
    labels = read_config(config).task.get("labels") if config.is_file() else None
    body = rows[1:]
    return [r[0] for r in body], counts(metric, [r[1] for r in body], [r[2] for r in body], labels)


def paired_gap(a: dict[int, str | Path], b: dict[int, str | Path], metric: str, n_resamples: int = 2000,
               random_state: int = 0) -> Gap:
    """Row A minus row B, each {seed: run folder}, paired on the seeds both have and on the dev examples."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise PastaError(f"no seed in common between the two rows (seeds {sorted(a)} and {sorted(b)})")
    tables = []
    for runs in (a, b):
        per_seed = [read_run(runs[s], metric) for s in seeds]
        tables.append(per_seed)
    index = tables[0][0][0]
    for per_seed in tables:
        for idx, _ in per_seed:
            if idx != index:
                raise PastaError("the runs were scored on different dev examples: compare runs of one budget")
    a_tab = np.stack([t for _, t in tables[0]])   # (seeds, examples, k)
    b_tab = np.stack([t for _, t in tables[1]])
    return _bootstrap(lambda s, examples: score(metric, a_tab[s], examples) - score(metric, b_tab[s], examples),
                      len(seeds), len(index), n_resamples, random_state)


def score_interval(runs: dict[int, str | Path], metric: str, n_resamples: int = 2000, random_state: int = 0) -> Gap:
    """One row's score (x100, the mean over its seeds, {seed: run folder}) with the 95% interval of that mean:
    the same bootstrap as `paired_gap`, over the row's dev examples and seeds, with nothing subtracted."""
    seeds = sorted(runs)
    if not seeds:
        raise PastaError("no finished run to take an interval over")
    per_seed = [read_run(runs[s], metric) for s in seeds]
    if any(idx != per_seed[0][0] for idx, _ in per_seed):
        raise PastaError("the runs were scored on different dev examples: compare runs of one budget")
    tab = np.stack([t for _, t in per_seed])
    return _bootstrap(lambda s, examples: score(metric, tab[s], examples), len(seeds), len(per_seed[0][0]),
                      n_resamples, random_state)


def _bootstrap(per_seed_score, n_seeds: int, n: int, n_resamples: int, random_state: int) -> Gap:
    """The mean over seeds of `per_seed_score(seed, examples)` (0..1), and its 95% percentile interval from
    scipy's bootstrap drawing the dev examples and, independently, the seeds; x100."""
    def statistic(examples, seed_draw, axis=-1):
        examples = np.asarray(examples, dtype=int)
        seed_draw = np.asarray(seed_draw, dtype=int)
        per_seed = np.stack([per_seed_score(s, examples) for s in range(n_seeds)], axis=-1)  # (..., seeds)
        return np.take_along_axis(per_seed, seed_draw, axis=-1).mean(axis=-1)

    point = float(statistic(np.arange(n), np.arange(n_seeds)))
    if n_seeds == 1:
        seed_sample = np.zeros(2, dtype=int)  # scipy needs two observations per sample; one seed drawn twice
    else:
        seed_sample = np.arange(n_seeds)
    res = stats.bootstrap((np.arange(n), seed_sample), statistic, paired=False, vectorized=True,
                          n_resamples=n_resamples, batch=100, method="percentile", confidence_level=0.95,
                          random_state=random_state)
    low, high = res.confidence_interval
    return Gap(100 * point, 100 * float(low), 100 * float(high), n_seeds, n)


def references(rows: tuple[str, ...], rows_kind: str) -> list[str]:
    """The rows a table's gaps are taken against: Table 4's classifier-only and PASTA (full); PASTA elsewhere."""
    wanted = ("classifier_only", "full") if rows_kind == "variant" else ("pasta",)
    return [r for r in wanted if r in rows]


def table_gaps(plan, cells, n_resamples: int = 2000) -> dict[tuple[str, str, str], Gap | str]:
    """(row, reference, task) -> the row's gap to the reference on the task's first column, or why there is none.
    Only finished cells are compared, on the seeds both have."""
    gaps: dict[tuple[str, str, str], Gap | str] = {}
    for ref in references(plan.rows, plan.table.rows_kind):
        for row in plan.rows:
            if row == ref:
                continue
            for task in plan.table.tasks:
                col = next(c for c in plan.table.columns if c.task == task)  # dev_predictions: the first split
                a, b = cells[(row, col.key)], cells[(ref, col.key)]
                if a.status != "ok" or b.status != "ok":
                    continue
                try:
                    gaps[(row, ref, task)] = paired_gap({r["seed"]: r["_dir"] for r in a.runs},
                                                        {r["seed"]: r["_dir"] for r in b.runs},
                                                        col.metric, n_resamples)
                except PastaError as e:
                    gaps[(row, ref, task)] = str(e)
    return gaps

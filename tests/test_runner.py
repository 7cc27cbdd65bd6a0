"""Short end-to-end runs on the packaged MiniLM: the run folder, every task kind, and no clobbering."""

import csv
import json
import os
from pathlib import Path

import pytest

from pasta_cli.config import compose
from pasta_cli.errors import PastaError
from pasta_cli.train import run_job

pytestmark = pytest.mark.slow  # every case trains the packaged MiniLM a few steps
DATA = Path(os.environ.get("PASTA_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real GLUE/CoNLL files not found at {DATA} (../shared/data)")

QUICK = ["trainer.max_steps=3", "trainer.batch_size=8", "trainer.eval_batch_size=32", "trainer.progress=false",
         "trainer.epochs=1", "task.max_train_samples=48", "task.max_eval_samples=40", "task.max_test_samples=24", "trainer.max_length=64"]


def run(tmp_path, *overrides):
    cfg = compose([*QUICK, *overrides])
    run_dir = tmp_path / "run"
    results = run_job(cfg, run_dir)
    return results, run_dir


def test_builtin_run_writes_every_file(tmp_path):
    sizes = ["task.builtin.train_size=64", "task.builtin.dev_size=32", "task.builtin.test_size=16"]
    results, d = run(tmp_path, *sizes)
    for name in ("config.yaml", "metrics.jsonl", "results.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "norms.png", "dev_predictions.tsv"):
        assert (d / name).is_file(), name
    saved = json.loads((d / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for key in ("task", "model", "method", "variant", "recipe", "main_metric", "best_scores", "best_epoch", "trainable",
                "trainable_pct", "trainable_method", "trainable_method_pct", "seed", "wall_time_s"):
        assert key in saved, key
    assert saved["trainable_method"] == 6 * 3 * 384  # MiniLM: 6 layers x 3 pair slots x hidden 384
    assert saved["recipe"] == "pasta" and "recipe: own" in (d / "config.yaml").read_text()
    assert saved["best_score"] == saved["best_scores"]["validation"]["accuracy"]
    lines = (d / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 1 and "validation/accuracy" in json.loads(lines[-1])
    dev = list(csv.reader((d / "dev_predictions.tsv").open(), delimiter="\t"))
    assert dev[0] == ["index", "prediction", "label"] and len(dev) == 1 + 32
    from pasta_cli.data.builtin import LABELS
    assert {row[1] for row in dev[1:]} <= set(LABELS)
    # the gold column is the dev split's own labels, row for row, so a bootstrap can rescore the file
    from pasta_cli.config import task_spec
    from pasta_cli.data import load_task
    gold = load_task(task_spec(compose([*QUICK, *sizes]))).splits["validation"]
    assert [row[2] for row in dev[1:]] == [LABELS[y] for y in gold["label"]]
    accuracy = sum(row[1] == row[2] for row in dev[1:]) / 32
    assert accuracy == pytest.approx(saved["best_scores"]["validation"]["accuracy"])
    assert not (d / "test_predictions.tsv").exists()  # the built-in test split is labelled: no submission file
    config = (d / "config.yaml").read_text()
    assert "lr:" in config and "${" not in config  # resolved


def test_a_finished_run_folder_is_never_overwritten(tmp_path):
    run(tmp_path, "task.builtin.train_size=32", "task.builtin.dev_size=16", "task.builtin.test_size=8")
    before = (tmp_path / "run" / "results.json").read_bytes()
    with pytest.raises(PastaError, match="already holds a finished run"):
        run(tmp_path, "task.builtin.train_size=32", "task.builtin.dev_size=16", "task.builtin.test_size=8")
    assert (tmp_path / "run" / "results.json").read_bytes() == before


@pytest.mark.parametrize("method", ["method=classifier_only", "method.variant=shared"])
def test_variants_run(tmp_path, method):
    results, d = run(tmp_path, method, "task.builtin.train_size=32", "task.builtin.dev_size=16", "task.builtin.test_size=8")
    if method == "method=classifier_only":
        assert results["trainable_method"] == 0 and not (d / "norms.png").exists()
    else:
        assert results["trainable_method"] == 6 * 384


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("task,kind,metric", [
    ("rte", "pair", "accuracy"), ("cola", "single", "matthews"), ("sst2", "single", "accuracy"),
    ("conll2003", "token", "entity_f1"),
])
def test_real_tasks_train_a_few_steps(tmp_path, task, kind, metric):
    folder = {"rte": "glue/RTE", "cola": "glue/CoLA", "sst2": "glue/SST-2", "conll2003": "conll2003"}[task]
    results, d = run(tmp_path, f"task={task}", f"task.data_dir={DATA / folder}")
    assert results["main_metric"] == metric and results["steps"] == 3
    assert results["trainable_method"] == 6 * (3 if kind == "pair" else 2) * 384
    dev = list(csv.reader((d / "dev_predictions.tsv").open(), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(dev) == 1 + 40
    if task != "conll2003":
        assert (d / "test_predictions.tsv").is_file()
    if task == "sst2":  # issue #21: the dev file names classes as pasta-predict does; GLUE's test file keeps ids
        test = list(csv.reader((d / "test_predictions.tsv").open(), delimiter="\t", quoting=csv.QUOTE_NONE))
        assert {r[1] for r in dev[1:]} | {r[2] for r in dev[1:]} <= {"negative", "positive"}
        assert {r[1] for r in test[1:]} <= {"0", "1"} and len(test) > 1


def write_stsb(root: Path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = [f"{i}\tmain-news\tf\t2012\t{i}\tnone\tnone\tA man eats food number {i}.\tA person eats {i}.\t{i % 6}.000"
            for i in range(40)]
    (root / "train.tsv").write_text("\n".join([header, *rows]) + "\n")
    (root / "dev.tsv").write_text("\n".join([header, *rows[:20]]) + "\n")
    (root / "test.tsv").write_text("\n".join([header.rsplit("\t", 1)[0], *[r.rsplit("\t", 1)[0] for r in rows[:10]]]))


@pytest.mark.slow
def test_regression_runs_end_to_end_on_an_stsb_fixture(tmp_path):
    root = tmp_path / "STS-B"
    root.mkdir()
    write_stsb(root)
    results, d = run(tmp_path, "task=stsb", f"task.data_dir={root}")
    assert results["main_metric"] == "spearman"
    assert set(results["best_scores"]["validation"]) >= {"pearson", "spearman"}
    test = list(csv.reader((d / "test_predictions.tsv").open(), delimiter="\t"))
    assert len(test) == 11 and all(float(r[1]) == float(r[1]) for r in test[1:])


def test_heldout_selection_reads_dev_once_at_the_end(tmp_path, monkeypatch):
    """trainer.selection=heldout: every evaluation during training is on the held-out slice of train; dev is
    predicted only after the last step, with the chosen model, and results.json says which protocol was used."""
    from pasta_cli.training import loop
    calls, real_predict, real_step = [], loop.predict, loop.train_step
    monkeypatch.setattr(loop, "predict", lambda run, split: calls.append(("predict", split)) or real_predict(run, split))
    monkeypatch.setattr(loop, "train_step", lambda run, micro: calls.append(("step", None)) or real_step(run, micro))
    results, d = run(tmp_path, "task.builtin.train_size=80", "task.builtin.dev_size=32", "trainer.selection=heldout",
                     "trainer.heldout_fraction=0.25", "trainer.max_steps=4", "trainer.eval_every_steps=2")
    last_step = max(i for i, (kind, _) in enumerate(calls) if kind == "step")
    during = [split for kind, split in calls[:last_step] if kind == "predict"]
    after = [split for kind, split in calls[last_step:] if kind == "predict"]
    assert during and set(during) == {"heldout"}, calls
    assert "validation" in after and "heldout" in after  # the chosen model scored on dev once (and on the slice)
    assert results["selection"] == "heldout" and set(results["selection_scores"]) == {"heldout"}
    assert set(results["best_scores"]) == {"validation"}
    assert results["best_score"] == results["best_scores"]["validation"]["accuracy"]
    lines = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert lines and all("heldout/accuracy" in x and not any(k.startswith("validation/") for k in x) for x in lines)
    # the slice: a quarter of the train rows, the same rows for the same seed, none of them trained on
    from pasta_cli.config import task_spec
    from pasta_cli.data import hold_out, load_task
    task = load_task(task_spec(compose([*QUICK, "task.builtin.train_size=80"])))
    a, b = hold_out(task, 0.25, 42), hold_out(task, 0.25, 42)
    assert len(a.splits["heldout"]) == 12 and a.splits["heldout"]["idx"] == b.splits["heldout"]["idx"]
    assert not set(a.splits["heldout"]["idx"]) & set(a.splits["train"]["idx"])


def test_dev_selection_is_recorded_and_a_bad_fraction_is_one_line(tmp_path):
    results, _ = run(tmp_path, "task.builtin.train_size=48", "task.builtin.dev_size=16")
    assert results["selection"] == "dev" and results["selection_scores"] == results["best_scores"]
    with pytest.raises(PastaError, match="heldout_fraction must be between 0 and 1"):
        run(tmp_path / "bad", "trainer.selection=heldout", "trainer.heldout_fraction=1.5")
    with pytest.raises(PastaError, match="unknown trainer.selection 'test'"):
        run(tmp_path / "bad2", "trainer.selection=test")

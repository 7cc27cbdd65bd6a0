"""`pasta-reproduce submission`: the GLUE zip from fixture run folders (names, row counts, labels, the best
seed's file), its refusal when a task is missing, and its checks against the test files answered."""

import json
import zipfile
from pathlib import Path

import pytest

from pasta_cli.paper import submission
from pasta_cli.paper.reproduce import main

# task -> (labels, submission form, test splits); Table 2's tasks as conf/task/*.yaml declare them
TASKS = {
    "cola": (["unacceptable", "acceptable"], "ids", ["test"]),
    "sst2": (["negative", "positive"], "ids", ["test"]),
    "mrpc": (["not_equivalent", "equivalent"], "ids", ["test"]),
    "stsb": (None, "names", ["test"]),
    "qqp": (["not_duplicate", "duplicate"], "ids", ["test"]),
    "mnli": (["entailment", "neutral", "contradiction"], "names", ["test_matched", "test_mismatched"]),
    "qnli": (["entailment", "not_entailment"], "names", ["test"]),
    "rte": (["entailment", "not_entailment"], "names", ["test"]),
}


def tsv(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))


def make_run(root: Path, task: str, seed: int, score: float, n_test: int = 5, data: Path | None = None):
    labels, form, splits = TASKS[task]
    run = root / "table2" / "paper" / task / f"pasta-na-s{seed}"
    data = data or root / "data" / task
    files = {}
    for split in splits:
        name = f"{split}.tsv"
        files[split] = name
        tsv(data / name, [["index", "sentence"], *([i, f"s{i}"] for i in range(n_test))])
        if labels is None:
            preds = [round(0.5 + i, 2) for i in range(n_test)]
        else:
            preds = [(i % len(labels)) if form == "ids" else labels[i % len(labels)] for i in range(n_test)]
        tsv(run / submission.test_file_name(split), [["index", "prediction"], *([i, p] for i, p in zip(range(n_test), preds))])
    task_cfg = {"name": task, "kind": "regression" if labels is None else "classification", "labels": labels,
                "submission_labels": form, "data_dir": str(data), "files": files}
    (run / "config.yaml").write_text(json.dumps({"task": task_cfg}))
    (run / "results.json").write_text(json.dumps({"method": "pasta", "variant": "full", "best_score": score,
                                                  "seed": seed}))
    return run


@pytest.fixture
def runs(tmp_path):
    for task in TASKS:
        make_run(tmp_path, task, 42, 0.70)
    best = make_run(tmp_path, "rte", 43, 0.75)  # the better seed answers RTE
    (best / "test_predictions.tsv").write_text("index\tprediction\n" + "".join(f"{i}\tentailment\n" for i in range(5)))
    tsv(tmp_path / "data" / "diagnostic.tsv", [["index", "sentence1", "sentence2"], *([i, "a", "b"] for i in range(4))])
    tsv(tmp_path / "data" / "glue" / "WNLI" / "test.tsv", [["index", "sentence1", "sentence2"], *([i, "a", "b"] for i in range(3))])
    return tmp_path


def fake_ax(run_dir, inputs):
    """pasta-predict stands in: the MNLI run's adapter 'predicts' entailment on every AX row."""
    n = len(submission.read_tsv(inputs)) - 1
    return [["index", "prediction"], *([str(i), "entailment"] for i in range(n))]


def test_the_zip_holds_every_file_checked_and_the_best_seed(runs, monkeypatch, capsys):
    monkeypatch.setattr(submission, "predict_with_adapter", fake_ax)
    rc = main(["submission", "table2", "--output-root", str(runs), "--data-dir", str(runs / "data"),
               "--ax", str(runs / "data" / "diagnostic.tsv"), "--wnli-majority"])
    assert rc == 0, capsys.readouterr()
    out = runs / "table2" / "paper" / "submission.zip"
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == sorted(["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv",
                                               "MNLI-mm.tsv", "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"])
        files = {n: [line.split("\t") for line in z.read(n).decode().splitlines()] for n in z.namelist()}
    for name, rows in files.items():
        assert rows[0] == ["index", "prediction"], name
    assert len(files["CoLA.tsv"]) == 6 and {r[1] for r in files["CoLA.tsv"][1:]} <= {"0", "1"}
    assert {r[1] for r in files["MNLI-mm.tsv"][1:]} <= {"entailment", "neutral", "contradiction"}
    assert [r[1] for r in files["RTE.tsv"][1:]] == ["entailment"] * 5  # seed 43's file, the better dev score
    assert len(files["AX.tsv"]) == 5 and len(files["WNLI.tsv"]) == 4 and {r[1] for r in files["WNLI.tsv"][1:]} == {"0"}
    assert "s43" in (out.with_suffix(".txt")).read_text().split("RTE.tsv\t")[1].splitlines()[0]


def test_a_missing_task_is_listed_and_no_zip_is_written_unless_partial(runs, monkeypatch, capsys):
    monkeypatch.setattr(submission, "predict_with_adapter", fake_ax)
    for path in (runs / "table2" / "paper" / "qqp").rglob("results.json"):
        path.unlink()  # QQP never finished
    args = ["submission", "table2", "--output-root", str(runs), "--data-dir", str(runs / "data"),
            "--ax", str(runs / "data" / "diagnostic.tsv")]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "QQP.tsv      missing: no finished pasta run" in out and "WNLI.tsv     missing" in out
    assert err.count("\n") == 1 and "2 of 11 files missing (QQP.tsv, WNLI.tsv)" in err
    assert not (runs / "table2" / "paper" / "submission.zip").exists()
    assert main([*args, "--partial"]) == 0
    with zipfile.ZipFile(runs / "table2" / "paper" / "submission.zip") as z:
        assert len(z.namelist()) == 9 and "QQP.tsv" not in z.namelist()


@pytest.mark.parametrize("break_it, says", [
    (lambda run: (run / "test_predictions.tsv").write_text("index\tprediction\n0\t1\n"), "1 predictions for the 5 rows"),
    (lambda run: (run / "test_predictions.tsv").write_text(
        "index\tprediction\n" + "".join(f"{i}\t2\n" for i in range(5))), "predicts '2'; the leaderboard takes ['0', '1']"),
    (lambda run: (run / "test_predictions.tsv").write_text(
        "index\tprediction\n" + "".join(f"{4 - i}\t1\n" for i in range(5))), "indices are not those of"),
])
def test_a_file_that_does_not_answer_its_test_file_is_refused(runs, monkeypatch, capsys, break_it, says):
    monkeypatch.setattr(submission, "predict_with_adapter", fake_ax)
    break_it(runs / "table2" / "paper" / "cola" / "pasta-na-s42")
    assert main(["submission", "table2", "--output-root", str(runs), "--partial"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pasta-reproduce submission: error: CoLA.tsv: ") and says in err

"""pasta-reproduce frontier: the Pareto front by hand, frontier.md/.csv/.png from fake runs (both protocols), the
command line's defaults and refusals, and the real command at smoke scale on a tiny BERT."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runner_fixtures import save_tiny_bert
from test_paper import fake_data, plan, write_result

from pasta_cli.files import write_tsv
from pasta_cli.paper.frontier import defaults, pareto_front
from pasta_cli.paper.reproduce import main, parser, plan_from_args, reproduce

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ the front by hand
@pytest.mark.parametrize("points,front", [
    ({"a": (10, 0.5)}, ["a"]),                                          # a single point is its own front
    ({"a": (10, 0.5), "b": (20, 0.4)}, ["a"]),                          # more parameters, lower score: dominated
    ({"a": (10, 0.5), "b": (20, 0.6), "c": (30, 0.55)}, ["a", "b"]),    # c: more than b, and lower
    ({"a": (10, 0.5), "b": (10, 0.6)}, ["b"]),                          # same x, b strictly better
    ({"a": (10, 0.5), "b": (20, 0.5)}, ["a"]),                          # same score, a strictly smaller
    ({"b": (10, 0.5), "a": (10, 0.5)}, ["a", "b"]),                     # equal points: neither dominates
    ({"c": (30, 0.9), "a": (10, 0.1), "b": (20, 0.5)}, ["a", "b", "c"]),  # every trade-off: all, by x
    ({}, []),
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front


# ------------------------------------------------------------------------------------------ rendering, no training
GOLD = ["negative", "positive"] * 20


def fake_run(root: Path, row: str, seed: int, right: int, trainable: int, head: int = 770, **kw) -> None:
    """A finished SST-2 run of a frontier row in its folder under `root`: `right` of 40 dev examples right, with
    its dev predictions for the interval."""
    method, variant = ("pasta", row) if row == "classifier_only" else (row, "full" if row == "pasta" else None)
    folder = root / f"{method}-{variant or 'na'}-s{seed}"
    write_result(folder, task="sst2", method=method, variant=variant, seed=seed,
                 best_score=right / 40, trainable=trainable + head, trainable_method=trainable, **kw)
    flip = {"negative": "positive", "positive": "negative"}
    preds = [g if i < right else flip[g] for i, g in enumerate(GOLD)]
    write_tsv(folder / "dev_predictions.tsv", ("index", "prediction", "label"),
              [(i, p, g) for i, (p, g) in enumerate(zip(preds, GOLD))])
    (folder / "config.yaml").write_text("task:\n  labels: [negative, positive]\n")


def test_frontier_files_from_fake_runs_name_the_front_and_compare_the_protocols(tmp_path):
    data = fake_data(tmp_path / "data", "sst2")
    out = tmp_path / "outputs"
    runs = {"classifier_only": (0, 24), "pasta": (192, 34), "bitfit": (928, 30), "lora": (5000, 36)}
    for selection, folder, shift in (("heldout", "cpu-heldout", 0), ("dev", "cpu", 2)):
        for seed in (1, 2):
            for row, (trainable, right) in runs.items():  # each row's mean: right / 40, + 5 points with dev selection
                fake_run(out / "frontier" / folder / "sst2", row, seed, right + shift + (1 if seed == 1 else -1),
                         trainable, selection=selection)
    p = plan("frontier", list(runs), (1, 2), data_dir=str(data), output_root=out, selected=("sst2",),
             selection="heldout")
    reproduce(p, run=False, echo=lambda *a: None)
    folder = out / "frontier" / "cpu-heldout"
    assert (folder / "frontier.png").stat().st_size > 0 and (out / "frontier" / "frontier.png").is_file()
    md = (folder / "frontier.md").read_text()
    # bitfit: more parameters than PASTA and a lower score: off the front; the other three trade off
    assert ("On SST-2 at scale cpu, the front is classifier only (770 parameters, 60.0), PASTA (962 parameters, "
            "85.0), LoRA (5,770 parameters, 90.0); dominated: BitFit.") in md
    line = next(x for x in md.splitlines() if x.startswith("| ★ PASTA |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:4] == ["962", "192", "85.0 ± 3.5"] and cells[5:] == ["1,2", "0.3 min"]
    low, high = map(float, cells[4].strip("[]").split(", "))
    assert low < 85.0 < high
    assert "| BitFit | 1,698 | 928 |" in md  # no star
    table_md = (folder / "table.md").read_text()
    assert "% params (paper)" not in table_md and "(the paper has no such table)" in table_md
    # the protocol table: dev scores 2 points above the held-out ones for every method
    assert "## The protocol itself: dev selection vs held-out selection" in md
    pasta = next(x for x in md.splitlines() if x.startswith("| PASTA |"))
    assert [c.strip() for c in pasta.strip("|").split("|")][1:] == ["90.0 ± 3.5", "85.0 ± 3.5", "-5.0"]
    rows = list(csv.DictReader((folder / "frontier.csv").open()))
    assert [(r["row"], r["on_front"]) for r in rows] == [("classifier_only", "1"), ("pasta", "1"), ("bitfit", "0"),
                                                         ("lora", "1")]
    assert rows[1]["trainable"] == "962" and rows[1]["trainable_method"] == "192" and rows[1]["selection"] == "heldout"
    assert float(rows[1]["ci_low"]) < float(rows[1]["mean"]) < float(rows[1]["ci_high"])
    # the dev folder alone (no held-out runs beside it) has no protocol table
    (out / "frontier" / "cpu-heldout").rename(out / "elsewhere")
    reproduce(plan("frontier", list(runs), (1, 2), data_dir=str(data), output_root=out, selected=("sst2",)),
              run=False, echo=lambda *a: None)
    assert "The protocol itself" not in (out / "frontier" / "cpu" / "frontier.md").read_text()


def test_a_run_without_dev_predictions_has_no_interval_but_stays_on_the_table(tmp_path):
    data = fake_data(tmp_path / "data", "sst2")
    out = tmp_path / "outputs"
    write_result(out / "frontier" / "cpu-heldout" / "sst2" / "bitfit-na-s1", task="sst2", method="bitfit",
                 variant=None, seed=1, best_score=0.9, trainable=1000, trainable_method=900)
    reproduce(plan("frontier", ["bitfit", "pasta"], (1,), data_dir=str(data), output_root=out, selected=("sst2",),
                   selection="heldout"), run=False, echo=lambda *a: None)
    md = (out / "frontier" / "cpu-heldout" / "frontier.md").read_text()
    assert "| ★ BitFit | 1,000 | 900 | 90.0 | – (" in md
    assert "the front is BitFit (1,000 parameters, 90.0)." in md and "No finished run (yet) for: PASTA." in md


# ------------------------------------------------------------------------------------------ the command line
def test_the_frontiers_defaults_come_from_paper_yaml_and_unregistered_rows_are_refused(capsys, tmp_path):
    d = defaults()
    p = plan_from_args(parser().parse_intermixed_args(["frontier", "--methods", "pasta,bitfit"]))
    assert p.rows == ("pasta", "bitfit") and p.seeds == tuple(d["seeds"]) and p.selection == d["selection"]
    assert p.selected == tuple(d["tasks"]["cpu"]) and p.folder == Path("outputs/frontier/cpu-heldout")
    p = plan_from_args(parser().parse_intermixed_args(["frontier", "--scale", "paper", "--methods", "bitfit",
                                                       "--selection", "dev", "--seeds", "7"]))
    assert p.rows == ("bitfit",) and p.seeds == (7,) and p.folder == Path("outputs/frontier/paper")
    assert p.selected == tuple(d["tasks"]["paper"]) and "experiment=frontier" in p.command("rte")
    assert plan_from_args(parser().parse_intermixed_args(["table4"])).selection == "dev"  # the tables keep theirs
    with pytest.raises(SystemExit) as e:
        main(["frontier", "--methods", "pasta,houlsby", "--output-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "frontier rows houlsby: no such method is registered" in err
    assert not list(tmp_path.iterdir())


def test_make_target_passes_only_what_is_given():
    def line(*args):
        out = subprocess.run(["make", "-n", "-o", ".venv/.installed-stamp", "reproduce-frontier", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return " ".join(out.stdout.replace("\\\n", " ").split())
    plain = line()
    assert ".venv/bin/pasta-reproduce frontier --scale \"cpu\"" in plain
    assert "--seeds" not in plain and "--selection" not in plain  # paper.yaml's frontier defaults apply
    given = line("SEEDS=1,2", "SELECTION=dev", "METHODS=pasta,bitfit")
    assert '--seeds "1,2"' in given and '--selection "dev"' in given and '--methods "pasta,bitfit"' in given


# ------------------------------------------------------------------------------------------ the real command, smoke
@pytest.mark.slow
def test_smoke_frontier_runs_end_to_end_and_resumes(tmp_path):
    """`pasta-reproduce frontier --scale smoke` with PASTA and BitFit, one seed, on a 24-example SST-2 and a tiny
    BERT: both run with held-out selection, and frontier.md/.png name the front; the same command has nothing left."""
    sst2 = tmp_path / "data" / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    for name, n in (("train.tsv", 24), ("dev.tsv", 16)):
        words = "the a man woman dog cat eats sees food park big small red blue".split()
        rows = [f"{' '.join(words[(i * 3 + j) % len(words)] for j in range(5))}\t{i % 2}" for i in range(n)]
        (sst2 / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    bert = save_tiny_bert(tmp_path / "bert")
    cmd = [str(Path(sys.executable).parent / "pasta-reproduce"), "frontier", "--scale", "smoke", "--data-dir",
           str(tmp_path / "data"), "--methods", "pasta,bitfit", "--seeds", "42", "--output-root",
           str(tmp_path / "outputs"), f"model.name_or_path={bert}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    folder = tmp_path / "outputs" / "frontier" / "smoke-heldout"
    assert (folder / "frontier.png").stat().st_size > 0 and (folder / "table.md").is_file()
    md = (folder / "frontier.md").read_text()
    assert "On SST-2 at scale smoke, the front is " in md and "| seeds |" in md
    rows = list(csv.DictReader((folder / "frontier.csv").open()))
    assert {r["row"] for r in rows} == {"pasta", "bitfit"} and {r["selection"] for r in rows} == {"heldout"}
    assert all(int(r["trainable"]) > int(r["trainable_method"]) > 0 and r["ci_low"] for r in rows)
    # resumable: the same command's plan has nothing left to run (reproduce() skips a column with no todo)
    again = plan_from_args(parser().parse_intermixed_args(cmd[1:]))
    assert again.todo("sst2") == [] and {d.name for d in (again.sweep_dir("sst2")).iterdir() if d.is_dir()} == {
        "pasta-full-s42", "bitfit-na-s42"}

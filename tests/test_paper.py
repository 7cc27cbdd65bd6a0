"""The paper's tables: paper.yaml against PAPER.md, the recipes and scales, the aggregation, the table
cells, the commands pasta-reproduce builds, its command line and the make target."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf.errors import InterpolationResolutionError

from pasta_cli.config import CONF_MODULE, compose, task_spec
from pasta_cli.methods import METHODS
from pasta_cli.paper import paper, value
from pasta_cli.paper.reproduce import main, parser, plan_from_args, reproduce
from pasta_cli.paper.results import aggregate, load_results
from pasta_cli.paper.schedule import Plan, config_names, run_subdir
from pasta_cli.paper.tables import data_folder, row_label, table, table_names
from pasta_cli.pasta import VARIANTS

ROOT = Path(__file__).resolve().parents[1]
PAPER_MD = ROOT.parent / "shared" / "docs" / "PAPER.md"
needs_paper_md = pytest.mark.skipif(not PAPER_MD.is_file(), reason=f"{PAPER_MD} is absent")
# paper.yaml's Table 6 and numbers are checked against PAPER.md's markdown tables, parsed below. Typed here,
# as this test reads PAPER.md's headings and its "Metrics per task": each table's model and column metrics
# (BERT: MRPC and QQP F1, STS-B Spearman, CoLA Matthews, the rest accuracy; RoBERTa: STS-B Pearson, CoLA
# Matthews, the rest accuracy; CoNLL2003 entity-level F1).
TASKS = ["rte", "cola", "stsb", "mrpc", "sst2", "qnli", "mnli", "qqp", "conll2003"]
BERT = {"rte": "accuracy", "cola": "matthews", "stsb": "spearman", "mrpc": "f1", "sst2": "accuracy",
        "qnli": "accuracy", "mnli": "accuracy", "qqp": "f1"}
ROBERTA = {**BERT, "stsb": "pearson", "mrpc": "accuracy", "qqp": "accuracy"}
EXPECTED = {"table2": ("bert-large", BERT), "table3": ("roberta-large", ROBERTA), "table5": ("bert-base", BERT),
            "table4": ("bert-large", {"cola": "matthews", "rte": "accuracy", "mrpc": "f1", "stsb": "spearman",
                                      "conll2003": "entity_f1"}),
            # not the paper's: every method under one protocol (tests/test_frontier.py); Table 2's tasks and CoNLL2003
            "frontier": ("bert-large", {**BERT, "conll2003": "entity_f1"})}
RECIPES = [(t, task) for t, (_, metrics) in EXPECTED.items() for task in metrics]


# ------------------------------------------------------------------------------------- paper.yaml vs PAPER.md
def paper_md_tables() -> dict[str, list[list[str]]]:
    """PAPER.md's markdown tables by heading (`table2` ... `table6`), each a list of rows of cell texts."""
    tables, current = {}, None
    for line in PAPER_MD.read_text().splitlines():
        m = re.match(r"##+ (Table \d)", line)
        if m:
            current = m.group(1).lower().replace(" ", "")
            tables[current] = []
        elif current and line.startswith("|") and not line.startswith("|---"):
            tables[current].append([c.strip() for c in line.strip("|").split("|")])
    return tables


@needs_paper_md
def test_table6_is_paper_md():
    header, *rows = paper_md_tables()["table6"]
    by_row = {r[0]: dict(zip(header[1:], r[1:])) for r in rows}
    assert [value(f"tasks.{task}.label") for task in TASKS] == header[1:]
    for task in TASKS:
        label = value(f"tasks.{task}.label")
        batch, gpus = re.match(r"(\d+) \((\d+)\)", by_row["batch size (GPUs)"][label]).groups()
        assert value(f"table6.{task}") == {
            "lr": float(by_row["learning rate"][label]), "batch_size": int(batch), "gpus": int(gpus),
            "adapted_tokens": int(by_row["adapted tokens"][label]), "epochs": int(by_row["epochs"][label]),
            "best_dev": float(by_row["best dev score"][label]), "best_epoch": int(by_row["best epoch"][label])}


@needs_paper_md
def test_reported_numbers_are_paper_md():
    md = paper_md_tables()
    checked = 0
    assert table("frontier").reported == {}  # the frontier is ours alone: no paper numbers to check
    for name in ("table2", "table3", "table4", "table5"):
        t = table(name)
        header, *rows = md[name]
        by_label = {r[0]: dict(zip(header, r)) for r in rows}
        assert sorted(by_label) == sorted(row_label(r) for r in t.reported), name  # every row, none extra
        for row, reported in t.reported.items():
            cells = by_label[row_label(row)]
            if "% params" in cells:
                assert reported.params == cells["% params"], (name, row)
            assert reported.avg == (float(cells["avg"]) if "avg" in cells else None), (name, row)
            for task in t.tasks:
                label = value(f"tasks.{task}.label")
                text = cells.get(label) or cells[f"{label} (m/mm)"]
                numbers = [None if x == "-" else float(x) for x in text.split("/")]
                assert [reported.scores[c.key] for c in t.columns if c.task == task] == numbers, (name, row, task)
                checked += len(numbers)
    assert checked == 6 * 9 + 3 * 8 + 5 * 5 + 4 * 9


def test_tables_hold_the_papers_columns_and_every_row_has_a_label():
    for name, (model, metrics) in EXPECTED.items():
        t = table(name)
        assert t.model == model and t.tasks == list(metrics) and t.name == name
        assert {c.task: c.metric for c in t.columns} == metrics
    assert [c.label for c in table("table2").columns][6:8] == ["MNLI-m", "MNLI-mm"]
    assert [(c.key, c.split) for c in table("table5").columns if c.task == "mnli"] == [
        ("mnli-m", "validation_matched"), ("mnli-mm", "validation_mismatched")]
    assert [(c.label, c.split) for c in table("table3").columns if c.task == "mnli"] == [("MNLI", "validation_matched")]
    assert table("table4").rows_kind == "variant" and table("table2").row_key == "method"
    assert table("table5").reported["full_ft"].scores["mnli-mm"] is None
    for option in config_names("method"):  # rows are `method=<row>`: every option builds a registered method
        assert compose([f"method={option}"]).method.name in METHODS
    for row in (*VARIANTS, *config_names("method")):
        assert row_label(row)
    assert data_folder("rte") == "glue/RTE" and data_folder("conll2003") == "conll2003"
    assert list(value("tasks")) == TASKS == list(paper().table6)
    recipes = {p.removesuffix(".yaml") for p in os.listdir(ROOT / "conf" / "experiment") if p.endswith(".yaml")}
    assert recipes == set(table_names()) == set(EXPECTED)


# ------------------------------------------------------------------------------------------ recipes and scales
@pytest.mark.parametrize("name,task", RECIPES, ids=[f"{t}-{k}" for t, k in RECIPES])
def test_every_recipe_composes_to_table6_and_the_tables_metric(name, task):
    t6 = value(f"table6.{task}")
    cfg = compose([f"experiment={name}", f"task={task}"])
    assert cfg.task.name == task and cfg.model.tag == EXPECTED[name][0]
    assert (cfg.optim.lr, cfg.trainer.batch_size, cfg.trainer.epochs) == (t6["lr"], t6["batch_size"], t6["epochs"])
    assert cfg.trainer.main_metric == EXPECTED[name][1][task]
    assert (len(cfg.task.text or ()) == 2) == (t6["adapted_tokens"] == 3)  # pairs: [CLS] A [SEP] B [SEP], 3 adapted tokens
    assert cfg.trainer.max_length == 128 and cfg.seed == 42
    assert (cfg.method.name, cfg.method.variant) == ("pasta", "full")


def test_a_task_outside_the_table_has_no_metric_and_rows_are_overrides():
    cfg = compose(["experiment=table4", "task=sst2"])
    with pytest.raises(InterpolationResolutionError, match="tables.table4.columns.sst2"):
        _ = cfg.trainer.main_metric
    cfg = compose(["experiment=table4", "task=rte", "method.variant=shared"])
    assert cfg.method.variant == "shared" and cfg.optim.lr == 4.5e-3
    cfg = compose(["experiment=table2", "task=mrpc", "method=bitfit"])
    assert cfg.method.name == "bitfit" and cfg.optim.lr == 1e-3 and cfg.trainer.epochs == 16  # BitFit's own recipe
    cfg = compose(["experiment=table2", "task=mrpc", "method=bitfit", "recipe=pasta"])
    assert cfg.optim.lr == 1e-3 and cfg.trainer.epochs == 150  # PASTA's budget, the method's own lr


@pytest.mark.parametrize("scale", config_names("scale"))
def test_every_scale_composes_with_every_recipe(scale):
    assert config_names("scale") == ["cpu", "paper", "smoke"]
    for name, (model, metrics) in EXPECTED.items():
        task = next(iter(metrics))
        cfg = compose([f"experiment={name}", f"task={task}", f"scale={scale}"])
        assert cfg.scale.name == scale and cfg.optim.lr == value(f"table6.{task}.lr") and cfg.trainer.max_length <= 128
        assert cfg.trainer.main_metric == metrics[task]
        if scale == "paper":
            assert cfg.model.tag == model and cfg.trainer.epochs == value(f"table6.{task}.epochs")
            assert cfg.task.max_train_samples is None
        else:
            assert cfg.model.name_or_path == "minilm" and list(cfg.task.test_splits) == []
            assert cfg.task.max_train_samples != 0 and 1 <= cfg.trainer.epochs <= 3  # null: all of train
    cfg = compose(["experiment=table4", "task=rte", f"scale={scale}", "model=bert-base"])
    assert cfg.model.tag == "bert-base"  # the command line beats both the recipe and the scale


def test_cpu_scale_has_a_budget_for_every_task():
    for task in TASKS:
        cfg = compose([f"task={task}", "scale=cpu"])
        assert cfg.task.max_train_samples != 0 and cfg.task.max_eval_samples > 0 and cfg.trainer.epochs >= 1
        spec = task_spec(cfg)  # what pasta-train reads: the budget's interpolations reach outside `task`
        assert (spec.max_train_samples, spec.max_eval_samples) == (cfg.task.max_train_samples, cfg.task.max_eval_samples)


def test_paper_grid_is_appendix_b():
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        cfg = hydra_compose("train", overrides=["hparams_search=paper_grid", "experiment=table4", "task=rte"],
                            return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    values = {o.key_or_group: [float(x) for x in o.sweep_iterator()] for o in parsed}
    assert values["optim.lr"] == [5e-4, 1e-3, 2e-3, 2.5e-3, 3e-3, 4.5e-3, 5e-3, 7e-3]
    assert values["trainer.epochs"] == [50, 80, 100, 150]


def hydra_config(*overrides):
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=True)


def test_optuna_search_composes_over_the_papers_ranges_with_a_resumable_study(tmp_path):
    cfg = hydra_config("hparams_search=optuna", "experiment=table4", "task=rte", f"hydra.sweep.dir={tmp_path}/s")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.n_trials == 32 == 8 * 4  # the paper grid's budget
    assert dict(sweeper.params) == {"optim.lr": "tag(log, interval(5e-4, 7e-3))",
                                    "trainer.epochs": "choice(50, 80, 100, 150)"}
    assert sweeper.storage == f"sqlite:///{tmp_path}/s/optuna.db" and (tmp_path / "s").is_dir()
    assert sweeper.study_name == "rte-bert-large-pasta-full" and sweeper.sampler.seed is None  # resumed: new points


@pytest.mark.parametrize("task", ["rte", "cola", "stsb"])
def test_the_slurm_launcher_gives_each_job_its_table6_gpus(task):
    cfg = hydra_config("hydra/launcher=submitit_slurm", "experiment=table4", f"task={task}")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == launcher.tasks_per_node == value(f"table6.{task}.gpus")
    basic = hydra_config("hydra/launcher=basic", f"task={task}").hydra.launcher
    assert basic._target_.endswith("BasicLauncher") and "gpus_per_node" not in basic


@pytest.mark.slow
def test_an_optuna_study_runs_on_the_basic_launcher_and_resumes(tmp_path):
    """Two trials, then two more from the same storage: four trials told, each with its own run folder, each
    told the held-out score its run was selected on."""
    import optuna
    cmd = [sys.executable, "-m", "pasta_cli.train", "hparams_search=optuna", "hydra/launcher=basic",
           "hydra.sweeper.n_trials=2", "trainer.epochs=choice(1)", "trainer.max_steps=1", "trainer.progress=false",
           "task.builtin.train_size=16", "task.builtin.dev_size=8", "task.builtin.test_size=4",
           "trainer.selection=heldout", "trainer.heldout_fraction=0.25", f"hydra.sweep.dir={tmp_path}/study"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(2):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="builtin-minilm-pasta-full", storage=f"sqlite:///{tmp_path}/study/optuna.db")
    told = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(told) == 4 and all(5e-4 <= t.params["optim.lr"] <= 7e-3 for t in told)
    assert len({t.params["optim.lr"] for t in told}) == 4  # the resumed study drew new points
    # the study maximises what each run chose its epoch on (the held-out slice), never the dev score
    results = [json.loads(p.read_text()) for p in (tmp_path / "study").rglob("results.json")]
    scores = sorted(r["selection_scores"]["heldout"]["accuracy"] for r in results)
    assert len(scores) == 4 and scores == sorted(t.value for t in told)


# ------------------------------------------------------------------------------------------------ aggregation
def write_result(path: Path, **kw) -> dict:
    r = {"task": "rte", "model": "minilm", "method": "pasta", "variant": "full", "main_metric": "accuracy",
         "best_score": 0.5, "best_epoch": 1, "trainable_method_pct": 0.0304, "trainable_pct": 0.05, "seed": 42,
         "lr": 4.5e-3, "recipe": "pasta",
         "epochs": 3, "effective_batch_size": 32, "wall_time_s": 10.0, **kw}
    r.setdefault("best_scores", {"validation": {r["main_metric"]: r["best_score"]}})
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(r))
    return r


def test_aggregate_picks_the_best_setting_by_mean_over_seeds(tmp_path):
    grid = {(1e-3, 50): [0.60, 0.70, 0.62], (2e-3, 50): [0.66, 0.64, 0.65], (2e-3, 80): [0.50, 0.90, 0.40]}
    for (lr, ep), scores in grid.items():
        for seed, s in zip((1, 2, 3), scores):
            write_result(tmp_path / f"lr{lr}-ep{ep}-s{seed}", lr=lr, epochs=ep, seed=seed, best_score=s)
    write_result(tmp_path / "cola", task="cola", main_metric="matthews", best_score=0.3,
                 best_scores={"validation": {"matthews": 0.3, "accuracy": 0.7}})
    rows = aggregate(load_results(tmp_path), ["task", "variant"])
    assert [r["task"] for r in rows] == ["cola", "rte"]
    cola, rte = rows
    assert (rte["lr"], rte["epochs"], rte["n"], rte["settings_tried"]) == (2e-3, 50, 3, 3)  # means .64 .65 .60
    assert rte["mean"] == pytest.approx(65.0)
    assert rte["std"] == pytest.approx(1.0)  # by hand: deviations +1, -1, 0 (x100) -> sqrt(2/2)
    assert cola["mean"] == pytest.approx(30.0) and cola["std"] is None and cola["n"] == 1
    by_acc = aggregate(load_results(tmp_path / "cola"), ["task"], metric="validation/accuracy")
    assert by_acc[0]["mean"] == pytest.approx(70.0) and by_acc[0]["metric"] == "validation/accuracy"


def test_aggregate_script_writes_markdown_and_csv(tmp_path, capsys):
    for seed, s in ((1, 0.7), (2, 0.8)):
        write_result(tmp_path / "sweep" / f"s{seed}", seed=seed, best_score=s)
    spec = importlib.util.spec_from_file_location("aggregate", ROOT / "scripts" / "aggregate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path / "sweep"), "--by", "task,variant"]) == 0
    assert "| rte | full | accuracy | 75.0 ± 7.1 | 2 |" in capsys.readouterr().out  # stdev(70, 80) = 7.07
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(tmp_path / "sweep"),
                          "--output", str(tmp_path / "agg.md")], capture_output=True, text=True, timeout=120,
                         check=False)  # as a script, from any folder
    assert out.returncode == 0, out.stderr
    csv_rows = (tmp_path / "agg.csv").read_text().splitlines()
    assert csv_rows[0].startswith("task,model,method,variant,metric,mean,std,n,seeds") and len(csv_rows) == 2
    assert (tmp_path / "agg.md").read_text().count("| rte |") == 1


# ------------------------------------------------------------------------------------------ cells and commands
def fake_data(root: Path, *tasks: str) -> Path:
    for task in tasks:
        folder = root / data_folder(task)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ("train.txt" if task == "conll2003" else "train.tsv")).write_text("")
    return root


def plan(name: str, rows, seeds=(42,), scale="cpu", data_dir=None, output_root="outputs", **kw) -> Plan:
    return Plan(table(name), tuple(rows), tuple(seeds), scale, data_dir, Path(output_root),
                tuple(kw.pop("selected", table(name).tasks)), **kw)


def test_table_cells_mean_std_diff_missing_and_failed(tmp_path, capsys):
    data = fake_data(tmp_path / "data", "rte", "cola", "conll2003")
    out = tmp_path / "outputs"
    sweep = out / "table4" / "cpu"
    rte = {1: 0.70, 2: 0.72, 3: 0.75}
    for seed, s in rte.items():
        write_result(sweep / "rte" / f"pasta-full-s{seed}", seed=seed, best_score=s)
        write_result(sweep / "rte" / f"pasta-classifier_only-s{seed}", variant="classifier_only", seed=seed,
                     best_score=0.5, trainable_method_pct=0.0)
        write_result(sweep / "cola" / f"pasta-full-s{seed}", task="cola", main_metric="matthews", seed=seed,
                     best_score=0.2, best_scores={"validation": {"matthews": 0.2 + seed / 100, "accuracy": 0.7}},
                     trainable_method_pct=0.0203)
    (sweep / "cola" / "pasta-classifier_only-s2").mkdir(parents=True)  # attempted, no results.json: failed
    (sweep / "cola" / "pasta-classifier_only-s2" / "train.log").write_text("Traceback ...\n")
    res = reproduce(plan("table4", ["full", "classifier_only"], (1, 2, 3), data_dir=str(data), output_root=out),
                    run=False, echo=lambda *a: None)
    cells = res.cells
    c = cells[("full", "rte")]
    assert c.status == "ok" and len(c.runs) == 3
    assert c.mean == pytest.approx(100 * statistics.mean(rte.values()))
    assert c.std == pytest.approx(100 * statistics.stdev(rte.values()))
    assert c.diff == pytest.approx(100 * statistics.mean(rte.values()) - 76.2)
    assert cells[("full", "cola")].mean == pytest.approx(22.0)  # the table's metric (matthews), not best_score
    assert cells[("classifier_only", "rte")].std == 0.0
    assert cells[("full", "mrpc")].status == cells[("full", "stsb")].status == "missing"
    failed = cells[("classifier_only", "cola")]
    assert failed.status == "failed" and failed.log.endswith("pasta-classifier_only-s2/train.log")
    assert cells[("full", "conll2003")].status == "pending"
    md = res.table_md.read_text()
    assert ("| PASTA | pasta (PASTA Table 6) | 0.0203%-0.0304% | 0.0500% | – | 22.0 ± 1.0 (65.4, -43.4) "
            "| 72.3 ± 2.5 (76.2, -3.9) | missing (no data) |" in md)
    assert "failed (log: " in md and (out / "table4" / "table.md").read_text() == md
    csv_lines = res.table_csv.read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * 5
    assert "method.variant=full seed=1,2,3" in csv_lines[1]  # each cell's own command
    assert main(["table4", "--report", "--scale", "cpu", "--data-dir", str(data), "--seeds", "1,2,3",
                 "--variants", "full,classifier_only", "--output-root", str(out)]) == 1  # a failed cell
    assert "failed cells: classifier_only/CoLA (log: " in capsys.readouterr().err


def test_a_report_during_the_run_calls_a_live_cell_running_not_failed(tmp_path):
    from pasta_cli.training.folder import FolderLock
    data = fake_data(tmp_path / "data", "rte")
    sweep = tmp_path / "outputs" / "table4" / "cpu" / "rte"
    write_result(sweep / "pasta-full-s1", seed=1)
    live, dead = sweep / "pasta-classifier_only-s1", sweep / "pasta-shared-s1"
    live.mkdir()
    dead.mkdir()
    with FolderLock(live):  # a pasta-train holds it now
        res = reproduce(plan("table4", ["full", "classifier_only", "shared"], (1,), data_dir=str(data),
                             output_root=tmp_path / "outputs"), run=False, echo=lambda *a: None)
    assert [res.cells[(r, "rte")].status for r in ("full", "classifier_only", "shared")] == ["ok", "running", "failed"]
    assert "| running |" in res.table_md.read_text()


def test_table_gaps_carry_bootstrap_intervals_and_count_what_held(tmp_path):
    """Table 4 with dev predictions: PASTA (full) right on 90% of RTE's examples, classifier-only on 50%: the gap
    is the mean difference of accuracies over seeds, its interval excludes 0, and the table says so."""
    from pasta_cli.files import write_tsv
    from pasta_cli.paper.uncertainty import paired_gap
    data = fake_data(tmp_path / "data", "rte")
    sweep = tmp_path / "outputs" / "table4" / "cpu" / "rte"
    gold = ["entailment", "not_entailment"] * 50
    flip = {"entailment": "not_entailment", "not_entailment": "entailment"}
    for seed in (1, 2):
        for variant, right in (("full", 90 - seed), ("classifier_only", 50)):
            run = sweep / f"pasta-{variant}-s{seed}"
            write_result(run, variant=variant, seed=seed, best_score=right / 100)
            preds = [g if i < right else flip[g] for i, g in enumerate(gold)]
            write_tsv(run / "dev_predictions.tsv", ("index", "prediction", "label"),
                      [(i, p, g) for i, (p, g) in enumerate(zip(preds, gold))])
            (run / "config.yaml").write_text("task:\n  labels: [entailment, not_entailment]\n")
    res = reproduce(plan("table4", ["full", "classifier_only"], (1, 2), data_dir=str(data),
                         output_root=tmp_path / "outputs"), run=False, echo=lambda *a: None)
    md = res.table_md.read_text()
    gap = paired_gap({s: sweep / f"pasta-full-s{s}" for s in (1, 2)},
                     {s: sweep / f"pasta-classifier_only-s{s}" for s in (1, 2)}, "accuracy")
    assert gap.point == pytest.approx(38.5) and gap.low > 0
    line = next(x for x in md.splitlines() if x.startswith("| PASTA | classifier only |"))
    assert line.split(" | ")[3].startswith("+38.5 [") and line.split(" | ")[3].endswith("✓")
    assert "classifier only trails PASTA with an interval that excludes 0 on **1 of 1** task columns" in md
    assert "model selection: best evaluation on dev" in md and "search budget: 1 setting per row" in md


def test_table_avg_and_mnli_columns(tmp_path):
    data = fake_data(tmp_path / "data", *table("table5").tasks)
    sweep = tmp_path / "outputs" / "table5" / "cpu"
    for task, metric in BERT.items():
        scores = ({"validation_matched": {"accuracy": 0.80}, "validation_mismatched": {"accuracy": 0.81}}
                  if task == "mnli" else {"validation": {metric: 0.80}})
        write_result(sweep / task / "pasta-full-s42", task=task, main_metric=metric, best_scores=scores)
    res = reproduce(plan("table5", ["pasta", "bitfit"], data_dir=str(data), output_root=tmp_path / "outputs"),
                    run=False, echo=lambda *a: None)
    assert res.cells[("pasta", "mnli-mm")].mean == pytest.approx(81.0)
    row = next(line for line in res.table_md.read_text().splitlines() if line.startswith("| PASTA |"))
    assert row.endswith("| 80.0 (77.8, +2.2) | 81.0 (78.8, +2.2) | 80.0 (80.8, -0.8) | 80.0 (81.4, -1.4) |")
    assert "| 0.015%-0.022% |" in row  # the paper's % params
    bitfit = next(line for line in res.table_md.read_text().splitlines() if line.startswith("| BitFit |"))
    assert bitfit.endswith("| pending | pending | – |")


def test_absent_data_is_missing_and_nothing_runs(tmp_path):
    res = reproduce(plan("table4", VARIANTS, scale="smoke", data_dir=str(tmp_path / "empty"),
                         output_root=tmp_path / "out"), echo=lambda *a: None)
    assert {c.status for c in res.cells.values()} == {"missing"}
    assert not res.failed and not list((tmp_path / "out").rglob("results.json"))
    header = res.table_md.read_text().split("\n|---")[0].splitlines()[-1]
    assert header == ("| row | recipe | % params (ours) | % trained (ours) | % params (paper) | CoLA | RTE | MRPC "
                      "| STS-B | CoNLL2003 |")


def test_commands_wandb_group_torchrun_batch_split_and_baseline_rows():
    p = plan("table2", ["pasta", "full_ft", "bitfit", "lora", "prefix", "adapter", "diff_prune"], (42, 43),
             scale="paper", data_dir="/data",
             output_root="outputs", nproc=4, logger="wandb")
    cmd = p.command("rte")
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    assert cmd[cmd.index("pasta_cli.train") + 1:cmd.index("pasta_cli.train") + 5] == [
        "-m", "experiment=table2", "task=rte", "scale=paper"]
    assert "method=pasta,full_ft,bitfit,lora,prefix,adapter,diff_prune" in cmd and "seed=42,43" in cmd
    # each row's recipe batch (the effective one) over 4 GPUs: Table 6's 32 for PASTA, 8 for BitFit
    assert "trainer.batch_size=${per_device:4}" in cmd and "task.data_dir=/data/glue/RTE" in cmd
    assert "recipe=own" in cmd
    assert "logger=wandb" in cmd and "logger.group=table2-paper" in cmd
    assert cmd[-2:] == ["hydra.sweep.dir=outputs/table2/paper/rte",
                        "hydra.sweep.subdir=${method.name}-${row_tag:}-s${seed}"]
    overrides = [w for w in cmd[cmd.index("pasta_cli.train") + 2:] if not w.startswith("hydra.")]
    single = [w.split(",")[0] if w.startswith(("method=", "seed=")) else w for w in overrides]
    cfg = compose(single)
    assert cfg.logger.group == "table2-paper" and cfg.task.data_dir == "/data/glue/RTE"
    assert cfg.model.tag == "bert-large" and cfg.trainer.batch_size == 8
    assert compose([*single, "method=bitfit"]).trainer.batch_size == 2
    hub = plan("table2", ["pasta"], scale="paper", nproc=1).command("rte")
    assert not any(w.startswith(("task.data_dir", "trainer.batch_size")) for w in hub)
    assert hub[1:3] == ["-m", "pasta_cli.train"]
    three = plan("table2", ["pasta"], scale="paper", nproc=3).command("rte")
    assert compose([w for w in three[three.index("pasta_cli.train") + 2:] if not w.startswith("hydra.")]
                   ).trainer.batch_size == 32  # 32 % 3: the batch stays whole on every process
    assert "method.variant=full" in plan("table4", ["full"]).command("rte", seeds=[7])
    args = parser().parse_intermixed_args(["table2", "--scale", "paper", "--methods", "lora", "trainer.precision=bf16"])
    p = plan_from_args(args)
    assert p.nproc == max(1, torch.cuda.device_count()) and p.rows == ("pasta", "lora") and p.seeds == (42,)
    assert p.extra == ("trainer.precision=bf16",) and p.selected == tuple(table("table2").tasks)
    assert run_subdir(table("table2"), "full_ft", 42) == "full_ft-na-s42"
    assert run_subdir(table("table2"), "classifier_only", 7) == "pasta-classifier_only-s7"
    assert run_subdir(table("table2"), "pasta", 1) == run_subdir(table("table4"), "full", 1) == "pasta-full-s1"


@pytest.mark.parametrize("argv,says", [
    ([], "give one of table2, table3, table4, table5"),
    (["table7"], "unknown table 'table7': choose one of table2"),
    (["table4", "--scale", "gpu"], "invalid choice: 'gpu' (choose from 'cpu', 'paper', 'smoke')"),
    (["table4", "--seeds", "42,x"], "--seeds '42,x': give whole numbers"),
    (["table4", "--variants", "full,both"], "--variants: both is no PASTA variant; choose from full, cls_only"),
    (["table2", "--methods", "houlsby"], "--methods: houlsby is no method here; choose from adapter, bitfit, "
                                         "classifier_only, diff_prune, fourierft, full_ft, ia3, ln_tuning, lora, "
                                         "loreft, loreft_special, prefix"),
    (["table4", "--tasks", "sst2"], "--tasks: sst2 is no column of table4; choose from cola, rte, mrpc, stsb"),
    (["table4", "--nproc", "0"], "--nproc 0: give 1 or more"),
    (["table4", "--jobs", "0"], "--jobs 0: give 1 or more task columns"),
    (["table4", "--logger", "neptune"], "invalid choice: 'neptune'"),
    (["table4", "--data-dir", "/nowhere", "trainer.epochz=3"], "do not compose"),
])
def test_bad_arguments_exit_2_with_one_line(argv, says, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--output-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("pasta-reproduce: error: "), err
    assert says in err
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


def test_make_target_passes_its_variables():
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed-stamp", "reproduce-table4", "SCALE=smoke",
                          "DATA_DIR=/d", "SEEDS=1,2", "VARIANTS=full", "TASKS=rte", "LOGGER=wandb", "SELECTION=heldout"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    line = " ".join(out.stdout.replace("\\\n", " ").split())
    assert '.venv/bin/pasta-reproduce table4 --scale "smoke" --data-dir "/d" --seeds "1,2"' in line
    assert '--variants "full" --tasks "rte" --logger "wandb" --selection "heldout"' in line


# ------------------------------------------------------------------------------------ the real thing, smoke scale
@pytest.mark.slow
def test_smoke_table4_on_the_shared_data(tmp_path, data_root):
    """`make reproduce-table4 SCALE=smoke TASKS=cola,rte,conll2003` (its command) on ../shared/data: those
    columns run, MRPC and STS-B are reported (not run, or missing where their data is absent), the table
    is Table 4's shape, and a re-run skips every finished cell."""
    variants, tasks = ["full", "classifier_only"], ["cola", "rte", "conll2003"]
    cmd = [str(Path(sys.executable).parent / "pasta-reproduce"), "table4", "--scale", "smoke", "--data-dir",
           str(data_root), "--variants", ",".join(variants), "--tasks", ",".join(tasks),
           "--output-root", str(tmp_path / "outputs")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    lines = (tmp_path / "outputs" / "table4" / "smoke" / "table.md").read_text().splitlines()
    start = lines.index("| row | recipe | % params (ours) | % trained (ours) | % params (paper) | CoLA | RTE | MRPC "
                        "| STS-B | CoNLL2003 |")
    body = [line.split(" | ") for line in lines[start + 2:start + 2 + len(variants)]]
    assert [r[0].lstrip("| ") for r in body] == [row_label(v) for v in variants]
    for r in body:
        assert r[1] == "pasta (PASTA Table 6)", r  # every variant trains on PASTA's recipe
        cola, rte, mrpc, stsb, conll = r[5:10]
        assert {mrpc, stsb} <= {"not run", "missing (no data)"}, r
        assert all(re.match(r"^-?\d+\.\d \(\d+\.\d, [+-]\d+\.\d\)", c) for c in (cola, rte, conll.rstrip(" |"))), r
    results = sorted((tmp_path / "outputs" / "table4" / "smoke").rglob("results.json"))
    assert len(results) == len(tasks) * len(variants)
    assert {json.loads(p.read_text())["model"] for p in results} == {"minilm"}
    stamps = [p.stat().st_mtime_ns for p in results]
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("finished already (skipped)") == len(tasks)
    assert [p.stat().st_mtime_ns for p in sorted(results)] == stamps

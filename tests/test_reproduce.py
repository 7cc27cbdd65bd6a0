"""Reproduce-a-table: recipes = Table 6, scales, the paper grid, the aggregation's numbers, the table runner."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from pasta_cli import reproduce as rp
from pasta_cli.config import CONF_DIR, compose

ROOT = Path(__file__).resolve().parents[1]
PAPER_MD = ROOT.parent / "shared" / "docs" / "PAPER.md"
# PAPER.md, Table 6, typed again here (not imported): lr, batch size, epochs, adapted tokens
TABLE6 = {
    "rte": (4.5e-3, 32, 150, 3), "cola": (5e-3, 32, 100, 2), "stsb": (2e-3, 32, 150, 3),
    "mrpc": (2.5e-3, 32, 150, 3), "sst2": (7e-3, 64, 100, 2), "qnli": (2e-3, 32, 80, 3),
    "mnli": (5e-4, 32, 50, 3), "qqp": (5e-3, 32, 100, 3), "conll2003": (3e-3, 16, 100, 2),
}
GLUE8 = ["rte", "cola", "stsb", "mrpc", "sst2", "qnli", "mnli", "qqp"]
EXPECTED = {"table2": ("bert-large", GLUE8), "table3": ("roberta-large", GLUE8), "table5": ("bert-base", GLUE8),
            "table4": ("bert-large", ["cola", "rte", "mrpc", "stsb", "conll2003"])}
RECIPES = [(t, task) for t, (_, tasks) in EXPECTED.items() for task in tasks]


# ------------------------------------------------------------------------------------------------ recipes
@pytest.mark.parametrize("table,task", RECIPES, ids=[f"{t}/{k}" for t, k in RECIPES])
def test_every_recipe_composes_to_table6(table, task):
    lr, batch, epochs, slots = TABLE6[task]
    cfg = compose([f"experiment={table}/{task}"])
    assert cfg.task.name == task and cfg.model.tag == EXPECTED[table][0]
    assert (cfg.optim.lr, cfg.trainer.batch_size, cfg.trainer.epochs) == (lr, batch, epochs)
    assert cfg.task.pair == (slots == 3) and cfg.trainer.max_length == 128 and cfg.seed == 42
    assert (cfg.method.name, cfg.method.variant) == ("pasta", "full")
    paper_metric = {"cola": "matthews", "stsb": "spearman", "mrpc": "f1", "qqp": "f1", "conll2003": "entity_f1"}
    if table == "table3":  # RoBERTa: STS-B Pearson, MRPC and QQP accuracy
        paper_metric.update(stsb="pearson", mrpc="accuracy", qqp="accuracy")
    assert cfg.trainer.main_metric == paper_metric.get(task, "accuracy")


def test_recipes_on_disk_are_what_table6_generates():
    assert rp.write_recipes(check=True) == []
    on_disk = {p for p in (CONF_DIR / "experiment").rglob("*.yaml") if p.parent.name != "scale"}
    assert on_disk == set(rp.all_recipes())


def test_rows_are_chosen_by_override():
    cfg = compose(["experiment=table4/rte", "method.variant=shared"])
    assert cfg.method.variant == "shared" and cfg.optim.lr == 4.5e-3
    cfg = compose(["experiment=table2/mrpc", "method=bitfit"])
    assert cfg.method.name == "bitfit" and cfg.optim.lr == 1e-3 and cfg.trainer.epochs == 150  # the method's own lr


@pytest.mark.parametrize("scale", rp.SCALES)
def test_scales_compose_with_a_recipe(scale):
    cfg = compose(["experiment=table4/rte", f"+experiment/scale={scale}"])
    assert cfg.scale.name == scale and cfg.optim.lr == 4.5e-3 and cfg.trainer.max_length <= 128
    if scale == "paper":
        assert cfg.model.tag == "bert-large" and cfg.trainer.epochs == 150 and cfg.task.max_train_samples is None
    else:
        assert cfg.model.name_or_path == "minilm" and list(cfg.task.test_splits) == []
        assert isinstance(cfg.task.max_train_samples, int) and isinstance(cfg.trainer.epochs, int)
        assert cfg.trainer.epochs <= 3


def test_cpu_scale_has_a_budget_for_every_task():
    for task in TABLE6:
        cfg = compose([f"experiment={'table4' if task == 'conll2003' else 'table5'}/{task}", "+experiment/scale=cpu"])
        assert cfg.task.max_train_samples > 0 and cfg.task.max_eval_samples > 0 and 1 <= cfg.trainer.epochs <= 3


def test_paper_grid_is_appendix_b():
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["hparams_search=paper_grid", "experiment=table4/rte"],
                            return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    params = cfg.hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    values = {o.key_or_group: [float(x) for x in o.sweep_iterator()] for o in parsed}
    assert values["optim.lr"] == [5e-4, 1e-3, 2e-3, 2.5e-3, 3e-3, 4.5e-3, 5e-3, 7e-3]
    assert values["trainer.epochs"] == [50, 80, 100, 150]


# ------------------------------------------------------------------------------------- the paper's numbers
def _paper_md_tables() -> dict[str, list[list[str]]]:
    tables, current = {}, None
    for line in PAPER_MD.read_text().splitlines():
        m = re.match(r"##+ (Table \d)", line)
        if m:
            current = m.group(1).lower().replace(" ", "")
            tables[current] = []
        elif current and line.startswith("|") and not line.startswith("|---"):
            tables[current].append([c.strip() for c in line.strip("|").split("|")])
    return tables


@pytest.mark.skipif(not PAPER_MD.is_file(), reason=f"{PAPER_MD} is absent")
def test_paper_numbers_are_transcribed_from_paper_md():
    tables = _paper_md_tables()
    names = {"Full fine-tuning": "full_ft", "Adapter": "adapter", "Diff-Prune": "diff_prune", "P-tuning v2": "prefix",
             "BitFit": "bitfit", "PASTA": "pasta", "LoRA": "lora"}
    t4 = {"PASTA": "full", "CLS-only (no [SEP])": "cls_only", "SEP-only (no [CLS])": "sep_only",
          "shared vector": "shared", "classifier only": "classifier_only"}
    checked = 0
    for table in ("table2", "table3", "table4", "table5"):
        header, *rows = tables[table]
        for row in rows:
            key = (t4 if table == "table4" else names)[row[0]]
            ours = rp.PAPER[table][key]
            cells = dict(zip(header, row))
            if table != "table4":
                assert ours["pct"] == cells["% params"].replace("–", "-")
            for col in rp.TABLES[table].columns:
                label = "MNLI (m/mm)" if col.task == "mnli" and table != "table3" else col.label
                text = cells[label]
                if col.key == "mnli-m":
                    text = text.split("/")[0]
                elif col.key == "mnli-mm":
                    text = text.split("/")[1]
                expected = None if text == "-" else float(text)
                assert ours[col.key] == expected, (table, key, col.key)
                checked += 1
            if "avg" in cells:
                assert ours["avg"] == float(cells["avg"])
    assert checked == 6 * 9 + 3 * 8 + 5 * 5 + 4 * 9


# ------------------------------------------------------------------------------------------ aggregation
def write_result(path: Path, **kw) -> dict:
    r = {"task": "rte", "model": "minilm", "method": "pasta", "variant": "full", "main_metric": "accuracy",
         "best_score": 0.5, "best_scores": {"validation": {"accuracy": 0.5}}, "best_epoch": 1, "trainable": 7682,
         "trainable_method": 6912, "trainable_method_pct": 0.0304, "trainable_pct": 0.0338, "seed": 42,
         "lr": 4.5e-3, "epochs": 3, "effective_batch_size": 32, "wall_time_s": 10.0}
    r.update(kw)
    if "best_scores" not in kw:
        r["best_scores"] = {"validation": {r["main_metric"]: r["best_score"]}}
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
    rows = rp.aggregate(rp.load_results(tmp_path), ["task", "variant"])
    assert [r["task"] for r in rows] == ["cola", "rte"]
    rte = rows[1]
    best = [0.66, 0.64, 0.65]  # means: 0.64, 0.65, 0.60 -> lr 2e-3, 50 epochs
    assert (rte["lr"], rte["epochs"], rte["n"], rte["settings_tried"]) == (2e-3, 50, 3, 3)
    assert rte["mean"] == pytest.approx(100 * (0.66 + 0.64 + 0.65) / 3)
    assert rte["std"] == pytest.approx(100 * statistics.stdev(best))
    assert rte["std"] == pytest.approx(1.0)  # by hand: deviations +1, -1, 0 (x100) -> sqrt(2/2)
    cola = rows[0]
    assert cola["mean"] == pytest.approx(30.0) and cola["std"] is None and cola["n"] == 1
    by_acc = rp.aggregate(rp.load_results(tmp_path / "cola"), ["task"], metric="validation/accuracy")
    assert by_acc[0]["mean"] == pytest.approx(70.0) and by_acc[0]["metric"] == "validation/accuracy"


def test_aggregate_script_writes_markdown_and_csv(tmp_path):
    for seed, s in ((1, 0.7), (2, 0.8)):
        write_result(tmp_path / "sweep" / f"s{seed}", seed=seed, best_score=s)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(tmp_path / "sweep"),
                          "--by", "task,variant"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "| rte | full | accuracy | 75.0 ± 7.1 | 2 |" in out.stdout  # stdev(70, 80) = 7.07
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(tmp_path / "sweep"),
                          "--output", str(tmp_path / "agg.md")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    csv_rows = (tmp_path / "agg.csv").read_text().splitlines()
    assert csv_rows[0].startswith("task,model,method,variant,metric,mean,std,n,seeds") and len(csv_rows) == 2
    assert (tmp_path / "agg.md").read_text().count("| rte |") == 1


def fake_data(root: Path, *folders: str) -> Path:
    for f in folders:
        (root / f).mkdir(parents=True, exist_ok=True)
        (root / f / ("train.txt" if f == "conll2003" else "train.tsv")).write_text("")
    return root


def test_table_cells_mean_std_diff_missing_and_failed(tmp_path):
    data = fake_data(tmp_path / "data", "glue/RTE", "glue/CoLA", "conll2003")
    out = tmp_path / "outputs"
    sweep = out / "table4" / "cpu"
    rte = {1: 0.70, 2: 0.72, 3: 0.75}
    for seed, s in rte.items():
        write_result(sweep / "rte" / f"pasta-full-s{seed}", seed=seed, best_score=s, trainable_method_pct=0.0304)
        write_result(sweep / "rte" / f"pasta-classifier_only-s{seed}", variant="classifier_only", seed=seed,
                     best_score=0.5, trainable_method_pct=0.0)
    for seed in rte:
        write_result(sweep / "cola" / f"pasta-full-s{seed}", task="cola", main_metric="matthews", seed=seed,
                     best_score=0.2, best_scores={"validation": {"matthews": 0.2 + seed / 100, "accuracy": 0.7}},
                     trainable_method_pct=0.0203)
    (sweep / "cola" / "pasta-classifier_only-s2").mkdir(parents=True)  # attempted, no results.json: failed
    (sweep / "cola" / "pasta-classifier_only-s2" / "train.log").write_text("Traceback ...\n")
    res = rp.reproduce("table4", "cpu", str(data), seeds=[1, 2, 3], variants=["full", "classifier_only"],
                       output_root=out, run=False, echo=lambda *a: None)
    cells = res["cells"]
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
    md = res["table"].read_text()
    assert "| PASTA | 0.0203%-0.0304% | – | 22.0 ± 1.0 (65.4, -43.4) | 72.3 ± 2.5 (76.2, -3.9) | missing (no data) |" in md
    assert "failed (log: " in md and (out / "table4" / "table.md").read_text() == md
    csv_lines = res["csv"].read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * 5
    assert "method.variant=full seed=1,2,3" in csv_lines[1]  # each cell's own command
    assert rp.main(["report", "table4", "--scale", "cpu", "--data-dir", str(data), "--seeds", "1,2,3",
                    "--variants", "full,classifier_only", "--output-root", str(out)]) == 1  # a failed cell


def test_absent_data_is_missing_and_nothing_runs(tmp_path):
    res = rp.reproduce("table4", "smoke", str(tmp_path / "empty"), output_root=tmp_path / "out", echo=lambda *a: None)
    assert {c.status for c in res["cells"].values()} == {"missing"}
    assert not res["failed"] and not list((tmp_path / "out").rglob("results.json"))
    header = res["table"].read_text().split("\n|---")[0].splitlines()[-1]
    assert header == "| row | % params (ours) | % params (paper) | CoLA | RTE | MRPC | STS-B | CoNLL2003 |"


def test_commands_wandb_group_torchrun_and_baseline_rows(tmp_path):
    t2 = rp.TABLES["table2"]
    rows = rp.rows_of(t2, methods=["full_ft", "bitfit", "lora", "prefix"])
    assert rows == ["pasta", "full_ft", "bitfit", "lora", "prefix"]
    cmd = rp.task_command(t2, "rte", rows, [42, 43], "paper", "/data", "outputs/table2/paper/rte", nproc=4,
                          logger="wandb")
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    assert "method=pasta,full_ft,bitfit,lora,prefix" in cmd and "seed=42,43" in cmd
    assert "trainer.batch_size=8" in cmd and "task.data_dir=/data/glue/RTE" in cmd
    assert "logger=wandb" in cmd and "logger.group=table2-paper" in cmd
    overrides = [w for w in cmd[cmd.index("pasta_cli.train") + 2:] if not w.startswith("hydra.")]
    overrides = [w.split(",")[0] if w.startswith(("method=", "seed=")) else w for w in overrides]
    cfg = compose(overrides)
    assert cfg.logger.group == "table2-paper" and cfg.task.data_dir == "/data/glue/RTE"
    hub = rp.task_command(t2, "rte", rows, [42], "paper", None, "x")
    assert not any(w.startswith("task.data_dir") for w in hub) and hub[1:3] == ["-m", "pasta_cli.train"]
    assert rp.PAPER["table2"]["prefix"]["rte"] == 70.1 and rp.ROW_LABELS["prefix"] == "P-tuning v2"
    assert rp.run_subdir(t2, "full_ft", 42) == "full_ft-na-s42"
    assert rp.run_subdir(t2, "classifier_only", 7) == "pasta-classifier_only-s7"


def test_make_target_calls_the_runner_with_the_variables():
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed-stamp", "reproduce-table4", "SCALE=smoke",
                          "DATA_DIR=/d", "SEEDS=1,2", "VARIANTS=full", "LOGGER=wandb"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = " ".join(out.stdout.replace("\\\n", " ").split())
    assert "-m pasta_cli.reproduce run table4 --scale \"smoke\" --data-dir \"/d\" --seeds \"1,2\"" in line
    assert "--variants \"full\"" in line and "--logger \"wandb\"" in line


# ------------------------------------------------------------------------------- the real thing, smoke scale
@pytest.mark.slow
def test_smoke_table4_on_the_shared_data(tmp_path, data_root):
    """`make reproduce-table4 SCALE=smoke` (its python entry) on ../shared/data: RTE, CoLA and CoNLL-2003 run,
    MRPC and STS-B are missing, the table is Table 4's shape, and a re-run skips every finished cell."""
    variants = (os.environ.get("VARIANTS") or "full,classifier_only").split(",")
    cmd = [sys.executable, "-m", "pasta_cli.reproduce", "run", "table4", "--scale", "smoke", "--data-dir",
           str(data_root), "--variants", ",".join(variants), "--output-root", str(tmp_path / "outputs")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    table = tmp_path / "outputs" / "table4" / "smoke" / "table.md"
    lines = table.read_text().splitlines()
    start = lines.index("| row | % params (ours) | % params (paper) | CoLA | RTE | MRPC | STS-B | CoNLL2003 |")
    body = [l.split(" | ") for l in lines[start + 2:start + 2 + len(variants)]]
    assert [r[0].lstrip("| ") for r in body] == [rp.ROW_LABELS[v] for v in variants]
    for r in body:
        cola, rte, mrpc, stsb, conll = r[3:8]
        assert mrpc == stsb == "missing (no data)"
        assert all(re.match(r"^-?\d+\.\d \(\d+\.\d, [+-]\d+\.\d\)", c) for c in (cola, rte, conll)), r
    results = sorted((tmp_path / "outputs" / "table4" / "smoke").rglob("results.json"))
    assert len(results) == 3 * len(variants)
    assert {json.loads(p.read_text())["model"] for p in results} == {"minilm"}
    stamps = [p.stat().st_mtime_ns for p in results]
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("finished already (skipped)") == 3
    assert [p.stat().st_mtime_ns for p in sorted(results)] == stamps

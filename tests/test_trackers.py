"""Issue #23, parts 5, 6 and 4: trackers (logger=mlflow | tensorboard | csv | wandb | none, or a list of them) and
the manifest in every results.json. Each tracker's files are read back with its own reader (MlflowClient,
TensorBoard's EventAccumulator, the csv module) and must hold what the run's metrics.jsonl holds; a tracker that
fails warns once and the run finishes; results.json names the versions installed and the code's commit; every
adapter/ holds a Hub model card (README.md) that huggingface_hub reads back."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from PIL import Image
from runner_fixtures import TINY_BUILTIN, TINY_RUN, pasta_train, save_tiny_bert

from pasta_cli import precision
from pasta_cli.config import compose
from pasta_cli.paper.reproduce import reproduce
from pasta_cli.paper.schedule import Plan
from pasta_cli.paper.tables import data_folder, table
from pasta_cli.paper.versions import versions_text
from pasta_cli.train import run_job
from pasta_cli.training import manifest
from pasta_cli.training.loggers import NullLogger, make_logger
from pasta_cli.training.trackers import OPENERS, Guarded, Trackers, chosen

ROOT = Path(__file__).resolve().parents[1]
LOGGER = "pasta_cli.training.loggers"
needs_mlflow = pytest.mark.skipif(not find_spec("mlflow"),
                                  reason="mlflow-skinny is not installed (pip install 'pasta-cli[mlflow]')")
needs_tensorboard = pytest.mark.skipif(not find_spec("tensorboard"),
                                       reason="tensorboard is not installed (pip install 'pasta-cli[tensorboard]')")
NEEDS = {"mlflow": [needs_mlflow], "tensorboard": [needs_tensorboard], "csv": []}


@pytest.fixture(autouse=True)
def mlflow_env(monkeypatch):
    """The environment variables the MLflow tracker sets by default, restored after each test."""
    for name in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


# --------------------------------------------------------------------------------------------- the readers
def read_csv(folder: Path) -> dict:
    """{"metrics": {name: {step: value}}, "config": {...}, "results": {...}, "images": [names]} of csv/."""
    metrics: dict = {}
    with open(folder / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            metrics.setdefault(row["name"], {})[int(row["step"])] = float(row["value"])
    pairs = {name: {r["key"]: r["value"] for r in csv.DictReader(open(folder / f"{name}.csv", newline=""))}
             for name in ("config", "results") if (folder / f"{name}.csv").is_file()}
    images = sorted(p.name for p in (folder / "images").iterdir()) if (folder / "images").is_dir() else []
    return {"metrics": metrics, **pairs, "images": images}


def read_tensorboard(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    metrics = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in tags["scalars"]}
    texts = {tag.split("/")[0]: events.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in tags["tensors"]}
    images = {tag: [(e.step, e.width, e.height) for e in events.Images(tag)] for tag in tags["images"]}
    return {"metrics": metrics, **texts, "images": images}


def read_mlflow(store: Path, experiment: str = "pasta-cli") -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    rid = run.info.run_id
    metrics = {k: {m.step: m.value for m in client.get_metric_history(rid, k)} for k in run.data.metrics}
    artifacts = [a.path for a in client.list_artifacts(rid)] + [a.path for a in client.list_artifacts(rid, "images")]
    summary = json.loads(Path(client.download_artifacts(rid, "summary.json", str(store.parent / "dl"))).read_text())
    return {"metrics": metrics, "params": run.data.params, "status": run.info.status, "name": run.info.run_name,
            "artifacts": artifacts, "summary": summary}


def tiny_png(path: Path) -> Path:
    Image.new("RGB", (6, 4), (200, 30, 30)).save(path)
    return path


# --------------------------------------------------------------------------------------------- the config
def test_logger_takes_one_tracker_or_a_list_and_wandb_keeps_its_keys():
    assert chosen(compose([]).logger) == [] and compose([]).logger.name == "none"
    assert chosen(compose(["logger=[csv,tensorboard]"]).logger) == ["tensorboard", "csv"]
    both = compose(["logger=[mlflow,wandb]", "logger.mode=offline", "logger.mlflow.tracking_uri=http://x:5000"])
    assert chosen(both.logger) == ["wandb", "mlflow"]
    assert both.logger.mode == "offline" and both.logger.mlflow.tracking_uri == "http://x:5000"
    wandb = compose(["logger=wandb", "logger.mode=offline"]).logger
    assert chosen(wandb) == ["wandb"] and wandb.mode == "offline" and wandb.project == "pasta-cli"
    assert compose(["logger=mlflow"]).logger.mlflow.run_name == "builtin-minilm-pasta-full-s42"
    assert isinstance(make_logger(compose(["logger=csv"]), {}, "/nowhere", main_process=False), NullLogger)


# --------------------------------------------------------------------------------------------- each tracker
@pytest.mark.parametrize("name", [pytest.param(n, marks=NEEDS[n]) for n in ("csv", "tensorboard", "mlflow")])
def test_each_tracker_holds_the_config_metrics_image_and_results(name, tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"seed": 7, "optim": {"lr": 0.0045}, "task": {"labels": ["a", "b"]}}
    logged = {2: {"train/loss": 0.69, "train/lr": 1e-3}, 4: {"eval/validation/accuracy": 0.625, "eval/lr": 5e-4}}
    results = {"best_score": 0.625, "steps": 4, "best_scores": {"validation": {"accuracy": 0.625}},
               "manifest": {"torch": "2.13.0"}, "variant": "full"}
    tracker = Guarded(name, lambda: OPENERS[name]({}, config, run_dir))
    for step, metrics in logged.items():
        tracker.log(metrics, step)
    tracker.image("norms", tiny_png(run_dir / "norms.png"), 4)
    tracker.image("norms_best", run_dir / "norms.png")
    tracker.summary(results)
    tracker.finish()
    assert not [r for r in caplog.records if r.name == LOGGER], "no tracker warned"
    if name == "csv":
        back = read_csv(run_dir / "csv")
        assert back["config"]["optim.lr"] == "0.0045" and back["config"]["task.labels"] == '["a", "b"]'
        assert back["results"]["best_scores.validation.accuracy"] == "0.625" and back["results"]["variant"] == "full"
        assert back["images"] == ["norms_best.png", "norms_step4.png"]
    elif name == "tensorboard":
        back = read_tensorboard(run_dir / "tensorboard")
        assert '"lr": 0.0045' in back["config"] and '"best_score": 0.625' in back["results"]
        assert back["images"] == {"norms": [(4, 6, 4)], "norms_best": [(0, 6, 4)]}
        assert back["metrics"]["results/best_scores/validation/accuracy"] == {4: pytest.approx(0.625)}
    else:
        back = read_mlflow(tmp_path / "mlruns")  # the default store: mlruns/ beside the run folder
        assert back["params"]["optim.lr"] == "0.0045" and back["status"] == "FINISHED"
        assert back["summary"] == results and {"config.json", "summary.json"} <= set(back["artifacts"])
        assert "images/norms_best.png" in back["artifacts"] and any("norms+step+4" in a for a in back["artifacts"])
        assert back["metrics"]["results/best_scores/validation/accuracy"] == {4: pytest.approx(0.625)}
    for step, metrics in logged.items():
        for key, value in metrics.items():
            assert back["metrics"][key][step] == pytest.approx(value, rel=1e-6), (key, step)


def test_the_csv_tracker_of_a_resumed_run_keeps_the_rows_before_its_restart(tmp_path):
    first = OPENERS["csv"]({}, {}, tmp_path)
    for step in (2, 4, 6):
        first.log({"train/loss": step / 10}, step)
    again = OPENERS["csv"]({}, {}, tmp_path)  # resumed from the checkpoint at step 4: steps 5, 6 run again
    again.log({"train/loss": 0.61}, 6)
    assert read_csv(tmp_path / "csv")["metrics"]["train/loss"] == {2: 0.2, 4: 0.4, 6: 0.61}


# --------------------------------------------------------------------------------------------- failures
class Broken:
    def __init__(self):
        self.calls = 0

    def log(self, metrics, step):
        self.calls += 1
        raise ConnectionError("server down\nsecond line")


def test_a_failing_tracker_warns_once_and_the_others_go_on(tmp_path, caplog):
    broken = Broken()
    trackers = Trackers([Guarded("mlflow", lambda: broken), Guarded("csv", lambda: OPENERS["csv"]({}, {}, tmp_path))])
    for step in (1, 2, 3):
        trackers.log({"train/loss": 0.5, "eval/validation/pearson": None}, step)
    trackers.summary({"best_score": 0.5})
    trackers.finish()
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert warnings == ["mlflow logging is off for this run (ConnectionError: server down); the run goes on and its "
                        "folder's files are written as always"]
    assert broken.calls == 1
    assert read_csv(tmp_path / "csv")["metrics"] == {"train/loss": {1: 0.5, 2: 0.5, 3: 0.5}}  # null: not sent


def test_a_tracker_that_is_not_installed_says_how_to_install_it(monkeypatch, tmp_path, caplog):
    for module in ("mlflow", "mlflow.entities", "mlflow.tracking", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, module, None)
    for name in ("mlflow", "tensorboard"):
        tracker = Guarded(name, lambda n=name: OPENERS[n]({}, {}, tmp_path))
        tracker.log({"x": 1.0}, 1)
        tracker.finish()
        assert tracker.tracker is None
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 2
    assert "pip install 'pasta-cli[mlflow]' to use it" in warnings[0]
    assert "pip install 'pasta-cli[tensorboard]' to use it" in warnings[1]


@needs_mlflow
def test_an_unwritable_mlflow_store_warns_once_and_the_run_finishes(tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder would go\n")
    model = save_tiny_bert(tmp_path / "bert")
    cfg = compose([f"model.name_or_path={model}", *TINY_RUN, *TINY_BUILTIN, "trainer.max_steps=2",
                   "logger=[mlflow,csv]", f"logger.mlflow.tracking_uri={(blocker / 'mlruns').as_uri()}"])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        results = run_job(cfg, tmp_path / "run")
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1 and warnings[0].startswith("mlflow logging is off for this run (")
    assert results["steps"] == 2 and (tmp_path / "run" / "results.json").is_file()
    assert read_csv(tmp_path / "run" / "csv")["results"]["steps"] == "2"  # the other tracker went on
    card = ModelCard.load(tmp_path / "run" / "adapter" / "README.md")
    assert card.data.base_model is None and card.data.tags[0] == "pasta"  # a local folder is no Hub id


# --------------------------------------------------------------------------------------------- a real run
def expected_metrics(run_dir: Path) -> dict:
    """{tracker key: {step: value}} from metrics.jsonl: each evaluation's numbers as eval/<key>."""
    out: dict = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for k, v in record.items():
            if k != "step" and v is not None:
                out.setdefault(f"eval/{k}", {})[record["step"]] = v
    return out


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT / "pasta_cli"), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


@needs_mlflow
@needs_tensorboard
@pytest.mark.slow
def test_a_run_with_three_trackers_mirrors_metrics_jsonl_and_records_its_manifest(tmp_path, caplog):
    run_dir = tmp_path / "run"
    code, _, err = pasta_train("logger=[csv,tensorboard,mlflow]", f"hydra.run.dir={run_dir}", "trainer.max_steps=4",
                               "trainer.eval_every_steps=2", "trainer.log_every_steps=2", "trainer.batch_size=8",
                               "trainer.progress=false", "trainer.max_length=64", "task.builtin.train_size=64",
                               "task.builtin.dev_size=32", "task.builtin.test_size=16")
    assert code == 0, err
    assert "logging is off" not in err
    want = expected_metrics(run_dir)
    assert set(want["eval/validation/accuracy"]) == {2, 4}
    readers = {"csv": read_csv(run_dir / "csv"), "tensorboard": read_tensorboard(run_dir / "tensorboard"),
               "mlflow": read_mlflow(tmp_path / "mlruns")}
    results = json.loads((run_dir / "results.json").read_text())
    for name, back in readers.items():
        for key, steps in want.items():
            assert {s: pytest.approx(v, rel=1e-6) for s, v in steps.items()} == \
                {s: back["metrics"][key][s] for s in steps}, (name, key)
        assert set(back["metrics"]["train/loss"]) == {2, 4}, name
        final = float(back["results"]["best_score"]) if name == "csv" else back["metrics"]["results/best_score"][4]
        assert final == pytest.approx(results["best_score"], rel=1e-6), name
    assert readers["csv"]["images"] == ["norms_best.png", "norms_step2.png", "norms_step4.png"]
    assert set(readers["tensorboard"]["images"]) == {"norms", "norms_best"}
    assert readers["mlflow"]["summary"] == results and readers["mlflow"]["params"]["seed"] == "42"
    assert readers["mlflow"]["name"] == "builtin-minilm-pasta-full-s42"
    # the manifest: every version as installed, the commit of this checkout, the device and the dtype
    m = results["manifest"]
    assert m["python"] == ".".join(map(str, sys.version_info[:3]))
    for package in ("torch", "transformers", "peft", "datasets", "pasta-cli"):
        assert m[package] == metadata.version(package), package
    stored = "bfloat16" if precision.fast_bf16("cpu") else "float32"  # model.dtype=auto, the default
    assert (m["device"], m["dtype"], m["frozen_dtype"]) == ("cpu", stored, stored)
    if shutil.which("git") and manifest.git_state():
        assert m["git_commit"] == git("rev-parse", "HEAD")
        assert m["git_dirty"] == bool(git("status", "--porcelain", "--untracked-files=no"))
    # adapter/README.md: the Hub's model card, read back by huggingface_hub
    card = ModelCard.load(run_dir / "adapter" / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert (card.data.library_name, card.data.pipeline_tag) == ("pasta-cli", "text-classification")
    assert "pasta" in card.data.tags and card.data.metrics == ["accuracy"]
    (score,) = card.data.eval_results
    assert (score.metric_type, score.dataset_split) == ("accuracy", "validation")
    assert score.metric_value == results["best_scores"]["validation"]["accuracy"]
    assert "Parameter-Efficient Tuning with Special Token Adaptation" in card.text
    assert "load_adapter(" in card.text and f"| seed | {results['seed']} |" in card.text


# --------------------------------------------------------------------------------------------- the manifest
def test_the_commit_is_the_package_folders_own_and_only_in_a_checkout(tmp_path, monkeypatch):
    repo, package = tmp_path / "repo", tmp_path / "repo" / "pasta_cli"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.setattr(manifest, "PACKAGE_DIR", package)
    assert manifest.git_state() == {}  # not a repository
    run = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*run, "init", "-q"], check=True)
    assert manifest.git_state() == {}  # a repository that does not track the package (a venv inside a checkout)
    subprocess.run([*run, "add", "pasta_cli/__init__.py"], check=True)
    subprocess.run([*run, "commit", "-q", "-m", "c"], check=True)
    sha = subprocess.run([*run, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "untracked.txt").write_text("x")
    assert manifest.git_state() == {"git_commit": sha, "git_dirty": False}
    (package / "__init__.py").write_text("# changed\n")
    assert manifest.git_state() == {"git_commit": sha, "git_dirty": True}
    monkeypatch.setattr(manifest.shutil, "which", lambda _: None)
    assert manifest.git_state() == {}  # no git


def test_a_tables_versions_line_names_shared_values_once_and_mixed_ones(tmp_path):
    same = {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.24.0", "peft": "0.18.0",
            "datasets": "4.4.1", "pasta-cli": "0.1.0", "git_commit": "d2d1dd7a" * 5, "git_dirty": False,
            "device": "cpu", "dtype": "float32"}
    line = versions_text([{"manifest": same}, {"manifest": dict(same)}])
    assert line.startswith("Versions of the 2 run(s) in this table (results.json `manifest`): python 3.11.2, ")
    assert "torch 2.13.0," in line and "git d2d1dd7ad2," in line and line.endswith("device cpu, dtype float32, frozen weights float32.")
    stored = versions_text([{"manifest": {**same, "dtype": "bfloat16", "frozen_dtype": "bfloat16"}}, {"manifest": same}])
    assert stored.endswith("dtype mixed (bfloat16 / float32), frozen weights mixed (bfloat16 / float32).")
    other = {**same, "torch": "2.12.0", "git_dirty": True}
    line = versions_text([{"manifest": same}, {"manifest": other}, {"best_score": 0.5}])
    assert "(1 older run(s) recorded no versions)" in line
    assert "torch mixed (2.12.0 / 2.13.0)" in line and "git mixed (d2d1dd7ad2 / d2d1dd7ad2-dirty)" in line
    assert "transformers 5.24.0," in line
    assert versions_text([{"best_score": 0.5}]) == ""
    # pasta-reproduce's table.md carries the line under the table
    data = tmp_path / "data" / data_folder("rte")
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("")
    for seed in (1, 2):
        folder = tmp_path / "out" / "table4" / "cpu" / "rte" / f"pasta-full-s{seed}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({
            "task": "rte", "model": "minilm", "method": "pasta", "variant": "full", "main_metric": "accuracy",
            "best_score": 0.7, "best_scores": {"validation": {"accuracy": 0.7}}, "seed": seed, "recipe": "pasta",
            "manifest": same if seed == 1 else other}))
    plan = Plan(table("table4"), ("full",), (1, 2), "cpu", str(tmp_path / "data"), tmp_path / "out", ("rte",))
    md = reproduce(plan, run=False, echo=lambda *a: None).table_md.read_text()
    assert "\nVersions of the 2 run(s) in this table" in md and "torch mixed (2.12.0 / 2.13.0)" in md


# --------------------------------------------------------------------------------------------- pasta-push
class FakeHub:
    calls: list = []

    def create_repo(self, repo_id, **kw):
        FakeHub.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        FakeHub.calls.append(("upload_folder", kw))
        if kw["repo_id"] == "me/down":
            raise ConnectionError("Failed to resolve 'huggingface.co'\nmore")
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/abc"})()


def test_pasta_push_uploads_the_adapter_folder_with_its_card_or_says_why_not(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from tiny_models import tiny

    from pasta_cli.adapter import save_adapter
    from pasta_cli.deploy.push import main
    from pasta_cli.methods import apply_method

    model, tokenizer = tiny("bert")
    model = apply_method(model, tokenizer, {"name": "pasta", "variant": "full"}, pair=True)
    adapter = save_adapter(model, tmp_path / "run" / "adapter", backbone="tiny", head="classification", pair=True,
                           task="rte", method="pasta", settings={"name": "pasta", "variant": "full"})
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    FakeHub.calls = []

    def push(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
            raise SystemExit(0)
        out = capsys.readouterr()
        return e.value.code, out.out + out.err

    code, said = push(str(tmp_path / "run"), "--repo-id", "me/rte")
    assert code == 2 and "has no README.md (the model card pasta-train writes" in said and not FakeHub.calls
    (adapter / "README.md").write_text("---\nlibrary_name: pasta-cli\n---\n")
    code, said = push(str(tmp_path / "run"), "--repo-id", "me/rte", "--private")
    assert code == 0 and said == "pasta-push: pushed: https://huggingface.co/me/rte/commit/abc\n"
    assert FakeHub.calls[0] == ("create_repo", "me/rte", {"private": True, "exist_ok": True})
    upload = FakeHub.calls[1][1]
    assert upload["folder_path"] == str(adapter) and upload["commit_message"] == "pasta-cli: rte adapter"
    code, said = push(str(adapter), "--repo-id", "me/down")
    assert code == 1 and said.startswith(f"pasta-push: error: cannot push '{adapter}' to me/down (ConnectionError: "
                                         "Failed to resolve 'huggingface.co'): check the network")
    code, said = push(str(tmp_path), "--repo-id", "me/rte")
    assert code == 2 and "no adapter_config.json in" in said
    code, said = push(str(adapter), "--repo-id", "rte")
    assert code == 2 and "--repo-id 'rte': give user/name or org/name" in said

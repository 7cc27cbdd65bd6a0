"""Trackers: where a run's config, metrics, figure and results are mirrored (`logger=`), one or several at once.

`logger=csv`, `logger=[mlflow,tensorboard]`: Hydra merges the chosen configs of the group (conf/logger/), each
under its own key (`logger.mlflow`, `logger.tensorboard`, `logger.csv`); W&B keeps its keys at `logger.*`
(`logger.mode`, `logger.project`), as before. Each tracker is one small class with the same four calls as
`loggers.NullLogger` (log, image, summary, finish), opened with the resolved config and the run folder.

A tracker is a mirror, never the record: `Guarded` wraps each one, so that any failure (not installed, a store
that cannot be written, a server that is down) warns once, turns that tracker off, and the run, the other
trackers and the run folder's own files go on as always (docs/RELIABILITY.md).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pasta_cli.files import write_atomic, write_csv
from pasta_cli.run_folder import CSV_DIR, TENSORBOARD_DIR

log = logging.getLogger("pasta_cli.training.loggers")

TRACKERS = ("wandb", "mlflow", "tensorboard", "csv")  # the options of conf/logger/ besides `none`
INSTALL = {"mlflow": "pip install 'pasta-cli[mlflow]'", "tensorboard": "pip install 'pasta-cli[tensorboard]'",
           "wandb": "pip install wandb"}
LABELS = {"wandb": "W&B"}  # how a warning names a tracker, where its name is not its brand
MLFLOW_STORE = "mlruns"  # the default MLflow store: a folder of this name beside the run folder (its parent)
# a tracking server that is down must cost seconds, not MLflow's default minutes of retries (an explicit
# environment variable wins)
MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def chosen(logger_cfg) -> list[str]:
    """The trackers a `logger` config selects, in TRACKERS' order: W&B by `name: wandb`, the others by their key."""
    names = ["wandb"] if logger_cfg.get("name") == "wandb" else []
    return names + [n for n in TRACKERS[1:] if isinstance(logger_cfg.get(n), Mapping)]


def flat(tree: Mapping, prefix: str = "", sep: str = ".") -> dict:
    """A nested dict as one level of keys joined by `sep` (lists and other values kept as they are)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping) and v:
            out.update(flat(v, f"{prefix}{k}{sep}", sep))
        else:
            out[f"{prefix}{k}"] = v
    return out


def numbers(values: Mapping) -> dict[str, float]:
    """The numbers of a flat dict, as floats (None, text, lists and booleans left out)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def text(value) -> str:
    """A config or results value as one CSV or parameter field: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


class Guarded:
    """One tracker behind a guard: the first exception (opening it or in any call) warns once and turns it off."""

    def __init__(self, name: str, open_tracker: Callable[[], object]):
        self.name, self.tracker = name, None
        try:
            self.tracker = open_tracker()
        except Exception as e:  # noqa: BLE001 - a tracker's failure must never cost the run
            self._off(e)

    def _off(self, err: Exception) -> None:
        reason = str(err).splitlines()[0] if str(err) else ""
        hint = f"; {INSTALL[self.name]} to use it" if isinstance(err, ImportError) and self.name in INSTALL else ""
        log.warning("%s logging is off for this run (%s: %s)%s; the run goes on and its folder's files are "
                    "written as always", LABELS.get(self.name, self.name), type(err).__name__, reason, hint)
        self.tracker = None

    def _call(self, what: str, *args) -> None:
        if self.tracker is not None:
            try:
                getattr(self.tracker, what)(*args)
            except Exception as e:  # noqa: BLE001
                self._off(e)

    def log(self, metrics: dict, step: int) -> None:
        self._call("log", metrics, step)

    def image(self, key: str, path, step: int | None = None) -> None:
        self._call("image", key, path, step)

    def summary(self, results: dict) -> None:
        self._call("summary", results)

    def finish(self) -> None:
        self._call("finish")
        self.tracker = None


class Trackers:
    """Every chosen tracker, called in turn; a metric without a value (null in metrics.jsonl) is not sent."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    def log(self, metrics: dict, step: int) -> None:
        metrics = {k: v for k, v in metrics.items() if v is not None}
        for t in self.trackers:
            t.log(metrics, step)

    def image(self, key: str, path, step: int | None = None) -> None:
        for t in self.trackers:
            t.image(key, path, step)

    def summary(self, results: dict) -> None:
        for t in self.trackers:
            t.summary(results)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()


class CsvTracker:
    """csv/ in the run folder (or `logger.csv.dir`): metrics.csv (step,name,value: a row per number logged),
    config.csv and results.csv (key,value; nested keys dotted), images/<key>_step<N>.png. Each file is rewritten
    whole and atomically, as metrics.jsonl is; a resumed run keeps the rows from before the step it restarts at."""

    def __init__(self, settings: Mapping, config: dict, run_dir: Path):
        self.dir = Path(settings.get("dir") or Path(run_dir) / CSV_DIR)
        self.rows: list[dict] = []
        if (self.dir / "metrics.csv").is_file():  # a resumed run: what it logged before
            with open(self.dir / "metrics.csv", newline="") as f:
                self.rows = list(csv.DictReader(f))
        self.resumed = bool(self.rows)
        write_csv(self.dir / "config.csv", [{"key": k, "value": text(v)} for k, v in flat(config).items()])

    def log(self, metrics: dict, step: int) -> None:
        if self.resumed:  # rows past the checkpoint the run restarted from are logged again now
            self.rows, self.resumed = [r for r in self.rows if int(r["step"]) < step], False
        self.rows += [{"step": step, "name": k, "value": repr(v)} for k, v in numbers(metrics).items()]
        write_csv(self.dir / "metrics.csv", self.rows)

    def image(self, key: str, path, step: int | None = None) -> None:
        name = f"{key}.png" if step is None else f"{key}_step{step}.png"
        write_atomic(self.dir / "images" / name, Path(path).read_bytes())

    def summary(self, results: dict) -> None:
        write_csv(self.dir / "results.csv", [{"key": k, "value": text(v)} for k, v in flat(results).items()])

    def finish(self) -> None:
        pass


class TensorBoardTracker:
    """Event files in tensorboard/ of the run folder (or `logger.tensorboard.dir`), through torch's SummaryWriter:
    `tensorboard --logdir outputs/runs` shows every run. The config and the results as text, every metric as a
    scalar at its step, the figure as an image, the results' numbers as scalars `results/<key>`."""

    def __init__(self, settings: Mapping, config: dict, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package

        self.writer = SummaryWriter(log_dir=str(settings.get("dir") or Path(run_dir) / TENSORBOARD_DIR))
        self.writer.add_text("config", markdown_code(json.dumps(config, indent=2, default=str)))

    def log(self, metrics: dict, step: int) -> None:
        for k, v in numbers(metrics).items():
            self.writer.add_scalar(k, v, step)

    def image(self, key: str, path, step: int | None = None) -> None:
        from matplotlib.image import imread

        self.writer.add_image(key, imread(str(path))[..., :3], step, dataformats="HWC")

    def summary(self, results: dict) -> None:
        step = results.get("steps")
        self.writer.add_text("results", markdown_code(json.dumps(results, indent=2, default=str)), step)
        for k, v in numbers(flat(results, "results/", "/")).items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


def markdown_code(body: str) -> str:
    """Text TensorBoard shows as written (its text plugin reads markdown: an indented block is code)."""
    return "\n".join("    " + line for line in body.splitlines())


def mlflow_uri(settings: Mapping, run_dir: Path) -> str:
    """`logger.mlflow.tracking_uri` (or MLFLOW_TRACKING_URI, through the config), else a local file store,
    mlruns/ beside the run folder: outputs/runs/<task>/<model>-<method>-<variant>/mlruns for single runs, the
    sweep's folder for a sweep's jobs."""
    return settings.get("tracking_uri") or (Path(run_dir).resolve().parent / MLFLOW_STORE).as_uri()


class MlflowTracker:
    """One MLflow run per pasta-train process, through MlflowClient (no global active run, so runs in one
    process never mix): the config as parameters (dotted keys) and config.json, metrics with their steps, the
    figure as a stepped image, the results as `results/<key>` metrics and summary.json (not results.json: a
    store beside run folders must not look like a run to pasta-reproduce)."""

    def __init__(self, settings: Mapping, config: dict, run_dir: Path):
        for k, v in MLFLOW_HTTP.items():
            os.environ.setdefault(k, v)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = mlflow_uri(settings, run_dir)
        if uri.startswith("file:") or "://" not in uri:  # MLflow 3 refuses its file store unless this says yes
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client, self.status = MlflowClient(tracking_uri=uri), "FINISHED"
        name = settings.get("experiment") or "pasta-cli"
        found = self.client.get_experiment_by_name(name)
        try:
            exp = found.experiment_id if found else self.client.create_experiment(name)
        except Exception:  # noqa: BLE001 - another job of a sweep created it in the meantime
            exp = self.client.get_experiment_by_name(name).experiment_id
        run = self.client.create_run(exp, run_name=settings.get("run_name"), tags={"pasta.run_dir": str(run_dir)})
        self.run_id = run.info.run_id
        params = [Param(k[:250], text(v)[:500]) for k, v in flat(config).items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 parameters
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_dict(self.run_id, config, "config.json")

    def _metrics(self, values: Mapping, step: int | None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step or 0) for k, v in numbers(values).items()]
        for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log(self, metrics: dict, step: int) -> None:
        self._metrics(metrics, step)

    def image(self, key: str, path, step: int | None = None) -> None:
        from PIL import Image

        with Image.open(path) as picture:
            if step is None:
                self.client.log_image(self.run_id, picture.copy(), artifact_file=f"images/{key}.png")
            else:
                self.client.log_image(self.run_id, picture.copy(), key=key, step=step)

    def summary(self, results: dict) -> None:
        self._metrics(flat(results, "results/", "/"), results.get("steps"))
        self.client.log_dict(self.run_id, results, "summary.json")
        self.status = "FAILED" if results.get("stopped") else "FINISHED"

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, status=self.status)


OPENERS = {"csv": CsvTracker, "tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}

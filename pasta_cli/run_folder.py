"""A run folder's file names and readers: what pasta-train writes (training/) and what every reader
(deploy/, paper/, analysis/, the adapter loader) reads back, named in one place.

    config.yaml           the resolved config, with the task's derived values (labels, metrics, files)
    metrics.jsonl         one line per evaluation
    results.json          the best model's scores, counts and budget (written last: a finished run)
    adapter/              the best model's adapter (pasta_cli.adapter)
    checkpoints/last.pt   the training state a resume continues from
    dev_predictions.tsv   the best model on the first evaluation split; test_predictions*.tsv: GLUE's files
    norms.png             the method's own figure (PASTA: the paper's Figure 4)
    adapter/README.md     the adapter's Hub model card
    csv/, tensorboard/    what logger=csv / logger=tensorboard mirror (training/trackers.py)

Each reader refuses a missing or damaged file with one PastaError line naming the file and what would be
right. Bottom layer: this module imports only errors and files (and the standard library, OmegaConf).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pasta_cli.errors import PastaError
from pasta_cli.files import read_tsv

CONFIG, METRICS, RESULTS, ADAPTER = "config.yaml", "metrics.jsonl", "results.json", "adapter"
CHECKPOINT = "checkpoints/last.pt"
TRAIN_LOG = "train.log"
DEV_PREDICTIONS = "dev_predictions.tsv"
FIGURE = "norms.png"
CARD = "README.md"  # in ADAPTER: the Hub model card
CSV_DIR, TENSORBOARD_DIR = "csv", "tensorboard"
FINISHED = "a finished pasta-train run writes it last"  # what a results.json reader would want


def test_file_name(split: str) -> str:
    """The prediction file of an unlabelled test split: test -> test_predictions.tsv, test_matched ->
    test_predictions_matched.tsv (what pasta-reproduce submission gathers)."""
    return f"{split.replace('test', 'test_predictions', 1)}.tsv"


def find_adapter(path) -> tuple[Path, Path | None]:
    """(adapter folder, run folder or None) from a run folder (holding adapter/) or an adapter folder: what
    pasta-analyze and pasta-push take."""
    path = Path(path)
    if not path.exists():
        raise PastaError(f"'{path}' does not exist: give a run folder written by pasta-train (it holds {ADAPTER}/) "
                         "or an adapter folder")
    if (path / ADAPTER).is_dir():
        return path / ADAPTER, path
    return path, (path.parent if (path.parent / CONFIG).is_file() else None)


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / RESULTS).is_file()


def is_running(run_dir: Path) -> bool:
    """Whether a live pasta-train holds the folder's lock now (a report must not call its run failed). The probe
    takes a shared lock for an instant; a job starting in that instant waits it out (training.folder.FolderLock,
    PROBE_GRACE_S)."""
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def read_config(path) -> DictConfig:
    """A run's config.yaml (`path`: the file, or the run folder holding it)."""
    path = Path(path)
    path = path / CONFIG if path.is_dir() else path
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, OSError) as e:
        raise PastaError(f"cannot read the run's '{path}' ({type(e).__name__}): the run folder is damaged") from None
    if not isinstance(cfg, DictConfig):
        raise PastaError(f"cannot read the run's '{path}' (not a mapping): the run folder is damaged")
    return cfg


def read_results(path) -> dict:
    """A run's results.json (`path`: the file, or the run folder holding it)."""
    path = Path(path)
    path = path / RESULTS if path.is_dir() else path
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PastaError(f"cannot read '{path}' ({type(e).__name__}): expected a run's results.json "
                         f"({FINISHED}); the run is unfinished or its folder is damaged") from None
    if not isinstance(results, dict):
        raise PastaError(f"cannot read '{path}' (not a JSON object): expected a run's results.json "
                         f"({FINISHED}); the run is unfinished or its folder is damaged")
    return results


def read_metrics(path) -> list[dict]:
    """A run's metrics.jsonl, one record per evaluation (`path`: the file, or the run folder holding it)."""
    path = Path(path)
    path = path / METRICS if path.is_dir() else path
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not all(isinstance(r, dict) for r in records):
            raise ValueError("a line is not a JSON object")
    except (OSError, ValueError) as e:
        raise PastaError(f"cannot read '{path}' ({type(e).__name__}): expected a run's metrics.jsonl, one JSON "
                         "object per evaluation line; the run folder is damaged") from None
    return records


def read_predictions(path) -> list[list[str]]:
    """A prediction file's rows, the header first (`path`: the file, or the run folder holding
    dev_predictions.tsv): index, prediction[, label]."""
    path = Path(path)
    path = path / DEV_PREDICTIONS if path.is_dir() else path
    try:
        rows = read_tsv(path)
    except (OSError, ValueError) as e:
        rows, reason = None, getattr(e, "strerror", None) or type(e).__name__
    else:
        reason = "no header index, prediction" if not rows or rows[0][:2] != ["index", "prediction"] else None
    if reason:
        raise PastaError(f"cannot read {path}: {reason}; expected a run's prediction file (a header index, "
                         "prediction[, label], then one row per example)")
    return rows

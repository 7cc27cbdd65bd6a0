"""pasta_cli.run_folder: the run folder's names and readers, on small files in tmp_path (no training).

Each reader gives one PastaError line for a missing or a damaged file, naming the file and what would be right,
and reads back what training/ writes through the same names."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from pasta_cli import run_folder
from pasta_cli.errors import PastaError
from pasta_cli.files import jsonl, write_atomic, write_json, write_tsv


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_round_trip(tmp_path):
    write_atomic(tmp_path / run_folder.CONFIG, OmegaConf.to_yaml(OmegaConf.create({"task": {"name": "rte"}})))
    write_json(tmp_path / run_folder.RESULTS, {"best_score": 0.5, "main_metric": "accuracy"})
    write_atomic(tmp_path / run_folder.METRICS, jsonl([{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}]))
    write_tsv(tmp_path / run_folder.DEV_PREDICTIONS, ("index", "prediction", "label"), [(0, "yes", "no")])
    assert run_folder.read_config(tmp_path).task.name == "rte"
    assert run_folder.read_config(tmp_path / run_folder.CONFIG).task.name == "rte"
    assert run_folder.read_results(tmp_path) == {"best_score": 0.5, "main_metric": "accuracy"}
    assert run_folder.is_finished(tmp_path)
    assert [r["step"] for r in run_folder.read_metrics(tmp_path)] == [1, 2]
    assert run_folder.read_predictions(tmp_path) == [["index", "prediction", "label"], ["0", "yes", "no"]]
    write_tsv(tmp_path / run_folder.test_file_name("test_matched"), ("index", "prediction"), [(3, 1)])
    assert run_folder.read_predictions(tmp_path / "test_predictions_matched.tsv")[1] == ["3", "1"]


def test_names():
    assert run_folder.test_file_name("test") == "test_predictions.tsv"
    assert run_folder.test_file_name("test_mismatched") == "test_predictions_mismatched.tsv"
    assert run_folder.CHECKPOINT == "checkpoints/last.pt"


@pytest.mark.parametrize("content", [None, "task: [unclosed\n", "- a list\n", b"\xff\xfe"])
def test_config_refused(tmp_path, content):
    path = tmp_path / run_folder.CONFIG
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PastaError) as e:
        run_folder.read_config(path)
    assert one_line(e).startswith(f"cannot read the run's '{path}' (")
    assert one_line(e).endswith("the run folder is damaged")


@pytest.mark.parametrize("name, read, content, want", [
    *[(run_folder.RESULTS, run_folder.read_results, c, ("expected a run's results.json", "unfinished"))
      for c in (None, '{"best_score": 0.5', "[1, 2]\n", "")],
    *[(run_folder.METRICS, run_folder.read_metrics, c, ("one JSON object per evaluation line",))
      for c in (None, '{"step": 1}\n{"step": 2', '{"step": 1}\n[2]\n')],
])
def test_results_and_metrics_refused(tmp_path, name, read, content, want):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(PastaError) as e:
        read(tmp_path)
    line = one_line(e)
    assert line.startswith(f"cannot read '{tmp_path / name}' (") and all(w in line for w in want), line


@pytest.mark.parametrize("content", [None, "", "0\tyes\n", "id\tlabel\n0\tyes\n"])
def test_predictions_refused(tmp_path, content):
    path = tmp_path / run_folder.DEV_PREDICTIONS
    if content is not None:
        path.write_text(content)
    with pytest.raises(PastaError) as e:
        run_folder.read_predictions(path)
    line = one_line(e)
    assert line.startswith(f"cannot read {path}: ")
    assert "expected a run's prediction file (a header index, prediction[, label]" in line


def test_unreadable_file_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / run_folder.RESULTS
    path.write_text("{}")
    path.chmod(0)
    with pytest.raises(PastaError, match=r"\(PermissionError\)"):
        run_folder.read_results(path)


def test_is_running_without_a_lock(tmp_path):
    assert run_folder.is_running(tmp_path) is False
    assert run_folder.is_running(tmp_path / "missing") is False

"""A researcher's own data from one YAML file: every format and every kind trains a few steps from a
task config in a temporary folder (`--config-dir`), and bad data or a bad task YAML is one line,
exit code 2, with no run folder left behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from runner_fixtures import pasta_train

from pasta_cli.config import compose
from pasta_cli.train import run_job

QUICK = ["trainer.max_steps=2", "trainer.epochs=1", "trainer.batch_size=4", "trainer.eval_batch_size=16",
         "trainer.max_length=32", "trainer.progress=false"]
WORDS = ["car", "door", "box", "hat", "cup", "lamp", "kite", "bag", "coat", "fence"]


def task_yaml(conf: Path, name: str, **keys) -> None:
    """conf/task/<name>.yaml with `keys` (plain YAML values)."""
    (conf / "task").mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}"] + [f"{k}: {json.dumps(v)}" for k, v in keys.items()]
    (conf / "task" / f"{name}.yaml").write_text("\n".join(lines) + "\n")


def pair_rows(n=12):
    return [{"q": f"is the {w} red?", "s": f"the {w} is {'red' if i % 2 else 'blue'}.", "y": "yes" if i % 2 else "no"}
            for i, w in enumerate((WORDS * 3)[:n])]


def write_csv(path: Path, rows):
    lines = ["q,s,y"] + [f'"{r["q"]}","{r["s"]}, really",{r["y"]}' for r in rows]  # quoted commas
    path.write_text("\n".join(lines) + "\n")


def write_conll(path: Path, n=8):
    sents = [[("Peter", "B-PER"), ("went", "O"), ("to", "O"), ("Paris", "B-LOC")],
             [("the", "O"), ("EU", "B-ORG"), ("rejects", "O"), ("it", "O")]]
    lines = ["-DOCSTART- -X- -X- O", ""]
    for i in range(n):
        lines += [f"{tok} NNP B-NP {tag}" for tok, tag in sents[i % 2]] + [""]
    path.write_text("\n".join(lines))


def make_task(tmp_path: Path, fmt: str):
    data, conf = tmp_path / "data", tmp_path / "conf"
    data.mkdir()
    rows = pair_rows()
    if fmt == "csv":  # pair classification, header
        for f, part in (("train.csv", rows), ("dev.csv", rows[:6])):
            write_csv(data / f, part)
        task_yaml(conf, "mine", format="csv", data_dir=str(data), text=["q", "s"], label="y")
        return "pair", ["no", "yes"]
    if fmt == "jsonl":  # single-sentence regression
        for f, part in (("train.jsonl", rows), ("dev.jsonl", rows[:6])):
            (data / f).write_text("".join(json.dumps({"s": r["s"], "score": i / 3}) + "\n" for i, r in enumerate(part)))
        task_yaml(conf, "mine", kind="regression", format="jsonl", data_dir=str(data), text=["s"], label="score")
        return "regression", None
    if fmt == "tsv":  # single sentences, header-less, columns by position
        for f, part in (("train.tsv", rows), ("dev.tsv", rows[:6])):
            (data / f).write_text("".join(f"src\t{1 if r['y'] == 'yes' else 0}\t{r['s']}\n" for r in part))
        task_yaml(conf, "mine", format="tsv", data_dir=str(data), text=["2"], label="1", labels=["neg", "pos"])
        return "single", ["neg", "pos"]
    if fmt == "parquet":  # pairs from parquet
        for f, part in (("train.parquet", rows), ("dev.parquet", rows[:6])):
            pq.write_table(pa.Table.from_pylist(part), data / f)
        task_yaml(conf, "mine", format="parquet", data_dir=str(data), text=["q", "s"], label="y")
        return "pair", ["no", "yes"]
    # tokens
    for f in ("train.txt", "validation.txt"):
        write_conll(data / f)
    task_yaml(conf, "mine", kind="token_classification", format="conll", data_dir=str(data),
              files={"train": "train.txt", "validation": "validation.txt"}, metrics=["entity_f1"])
    return "tokens", ["B-LOC", "B-ORG", "B-PER", "O"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "tsv", "parquet", "conll"])
def test_a_task_yaml_of_ones_own_trains_for_every_format_and_kind(tmp_path, fmt):
    kind, labels = make_task(tmp_path, fmt)
    cfg = compose(["task=mine", *QUICK], config_dir=str(tmp_path / "conf"))
    results = run_job(cfg, tmp_path / "run")
    assert results["steps"] == 2
    slots = {"pair": 3, "single": 2, "regression": 2, "tokens": 2}[kind]
    assert results["trainable_method"] == 6 * slots * 384
    recorded = (tmp_path / "run" / "config.yaml").read_text()
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    if labels:  # labels read from train (or given) are recorded in config.yaml and in the adapter, in order
        assert list(adapter["id2label"].values()) == labels
        assert "labels:\n" + "".join(f"  - {json.dumps(l) if l in ('yes', 'no') else l}\n" for l in labels) in \
            recorded.replace("'", '"')
    expected_main = {"pair": "accuracy", "single": "accuracy", "regression": "pearson", "tokens": "entity_f1"}[kind]
    assert results["main_metric"] == expected_main and f"main_metric: {expected_main}" in recorded
    assert f"format: {fmt}" in recorded


def cli(tmp_path: Path, *args):
    return subprocess.run([sys.executable, "-m", "pasta_cli.train", "--config-dir", str(tmp_path / "conf"),
                           "task=mine", *QUICK, f"hydra.run.dir={tmp_path}/run", *args], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


BAD = {  # what to break -> words the one line must hold
    "missing column": ("csv", lambda d: (d / "dev.csv").write_text("q,s,label\na,b,yes\n"), ["dev.csv", "line 2", "'y'"]),
    "label outside labels": ("tsv", lambda d: (d / "dev.tsv").write_text("src\t7\ta sentence\n"),
                             ["dev.tsv", "line 1", "'7'", "neg, pos"]),
    "ragged row": ("csv", lambda d: (d / "train.csv").write_text("q,s,y\na,b,yes\na,b\n"), ["train.csv", "line 3", "found 2"]),
    "empty split": ("jsonl", lambda d: (d / "dev.jsonl").write_text(""), ["dev.jsonl", "empty"]),
    "header only": ("csv", lambda d: (d / "dev.csv").write_text("q,s,y\n"), ["dev.csv", "no rows"]),
    "not UTF-8": ("jsonl", lambda d: (d / "train.jsonl").write_bytes(b'{"s": "caf\xe9", "score": 1}\n'),
                  ["train.jsonl", "line 1", "UTF-8"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_one_line_exit_2_and_no_run_folder(tmp_path, case):
    fmt, damage, words = BAD[case]
    make_task(tmp_path, fmt)
    damage(tmp_path / "data")
    # pasta-train's main() in this process (runner_fixtures.pasta_train): no interpreter start per case; the
    # bad task YAMLs below still go through a new process, as a user's command does
    code, _, stderr = pasta_train("--config-dir", str(tmp_path / "conf"), "task=mine", *QUICK,
                                  f"hydra.run.dir={tmp_path}/run")
    errors = [l for l in stderr.splitlines() if l.startswith("pasta-train: error:")]
    assert code == 2 and len(errors) == 1, stderr[-2000:]
    assert all(w in errors[0] for w in words), errors[0]
    assert "Traceback" not in stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("line,words", [
    ("lables: [a, b]", ["task/mine", "lables", "TaskSpec"]),
    ("kind: classifcation", ["classifcation", "classification", "regression"]),
    ("epochs: many", ["many", "task.epochs"]),
])
def test_a_bad_task_yaml_fails_at_compose_time_in_one_line(tmp_path, line, words):
    make_task(tmp_path, "csv")
    path = tmp_path / "conf" / "task" / "mine.yaml"
    path.write_text(path.read_text() + line + "\n")
    out = cli(tmp_path)
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("pasta-train: error:"), out.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "run").exists()


def test_the_custom_task_takes_everything_from_the_command_line(tmp_path):
    data = tmp_path / "x"
    data.mkdir()
    rows = pair_rows()
    (data / "train.jsonl").write_text("".join(json.dumps({"question": r["q"], "sentence": r["s"], "label": r["y"]})
                                              + "\n" for r in rows))
    cfg = compose(["task=custom", "task.format=jsonl", f"task.data_dir={data}", "task.text=[question,sentence]",
                   "task.label=label"])
    assert (cfg.task.format.value, cfg.task.text, cfg.task.label) == ("jsonl", ["question", "sentence"], "label")
    from pasta_cli.data import load_task
    from pasta_cli.errors import PastaError

    with pytest.raises(PastaError, match="dev.jsonl"):  # dev.jsonl is the default validation file: it is absent
        load_task(cfg.task)
    (data / "dev.jsonl").write_text((data / "train.jsonl").read_text())
    task = load_task(cfg.task)
    assert task.pair and task.labels == ["no", "yes"] and len(task.splits["train"]) == len(rows)

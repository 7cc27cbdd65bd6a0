"""What the issue #21 runner tests share: a tiny BERT saved as a model folder (no download, trains in a second),
pasta-train called in-process (its real entry point, `main()`, without a new interpreter per case), and the checks
every run folder must pass: strict JSON, no non-finite number anywhere, every file and folder with the umask's mode."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
from pathlib import Path

import yaml
from tiny_models import tiny

from pasta_cli import train

# a one-step run on the tiny model: what the fuzzers train when a case is accepted
TINY_RUN = ["model.tag=tiny", "trainer.max_length=32", "trainer.progress=false", "trainer.batch_size=8",
            "trainer.eval_batch_size=16", "trainer.max_steps=1"]
TINY_BUILTIN = ["task.builtin.train_size=8", "task.builtin.dev_size=8", "task.builtin.test_size=4"]


def save_tiny_bert(folder: Path, num_labels: int = 2) -> Path:
    model, tokenizer = tiny("bert", num_labels=num_labels)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pasta_train(*args: str) -> tuple[int, str, str]:
    """`pasta-train ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv, full_error = sys.argv, os.environ.pop("HYDRA_FULL_ERROR", None)  # main() sets it for Hydra: not the user
    sys.argv = ["pasta-train", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            train.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        os.environ.pop("HYDRA_FULL_ERROR", None)
        if full_error is not None:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    return code, out.getvalue(), err.getvalue()


def error_lines(stderr: str) -> list[str]:
    """The lines pasta-train printed as its own (progress bars and warnings of libraries aside)."""
    return [line for line in stderr.splitlines() if line.startswith("pasta-train:")]


def _refuse_constant(name: str):
    raise ValueError(f"non-finite JSON constant {name}")


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (Python's json reads them by default)."""
    return json.loads(text, parse_constant=_refuse_constant)


def finite_everywhere(value, where: str) -> None:
    if isinstance(value, float):
        assert math.isfinite(value), f"{where}: {value}"
    elif isinstance(value, dict):
        for k, v in value.items():
            finite_everywhere(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            finite_everywhere(v, f"{where}[{i}]")


def check_run_folder(run_dir: Path, umask: int = 0o022) -> list[Path]:
    """Every file of a run parses strictly (JSON without NaN; YAML and TSV without a non-finite number) and has the
    umask's mode, every folder too; returns the files checked."""
    checked = []
    for p in sorted(run_dir.rglob("*")):
        mode = p.stat().st_mode & 0o777
        assert mode == (0o777 if p.is_dir() else 0o666) & ~umask, f"{p}: mode {oct(mode)}"
        if p.is_dir():
            continue
        checked.append(p)
        if p.suffix == ".json":
            finite_everywhere(strict_json(p.read_text()), p.name)
        elif p.suffix == ".jsonl":
            for n, line in enumerate(p.read_text().splitlines()):
                finite_everywhere(strict_json(line), f"{p.name} line {n + 1}")
        elif p.suffix == ".yaml":
            finite_everywhere(yaml.safe_load(p.read_text()), p.name)
        elif p.suffix == ".tsv":  # (train.log is prose: it may say that a loss became nan)
            words = p.read_text().replace("\t", " ").split()
            assert not {"nan", "NaN", "inf", "-inf", "Infinity"} & set(words), p
    return checked


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)

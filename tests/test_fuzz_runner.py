"""Issue #21's fuzzers for pasta-train (Hypothesis): hostile data files in each format and random values of every
typed setting. Every case either trains (a tiny model, one step) or is refused in one line with exit code 2 and no
run folder; never a traceback, never a non-finite number in a run's files. Most data cases stop at the validation
stage (`load_task` and tokenization, what a run does before its model loads); a few go through pasta-train whole.
Bounded so that the file runs in about a minute: docs/RELIABILITY.md gives the examples tried and what they found."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runner_fixtures import TINY_BUILTIN, TINY_RUN, check_run_folder, error_lines, pasta_train, save_tiny_bert
from transformers import AutoTokenizer

from pasta_cli.config import compose, task_spec
from pasta_cli.data import encode, load_task
from pasta_cli.errors import PastaError

pytestmark = pytest.mark.fuzz
FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

LABELS = ["0", "1", "x", "y", "nan", "NaN", "inf", "-inf", "Infinity", "1e39", "-3.5", "", " ", "\"", "1,5"]
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12) | \
    st.sampled_from(["", " ", "\"", "\"a,b\"", "a\tb", "a\nb", "x" * 5000, "[SEP]", "\u00e9t\u00e9", "\ud83d"])
CELL = TEXT | st.sampled_from(LABELS)
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "latin-1"]


def table(sep: str):
    """Delimited rows, a header first; each row 0-3 cells, so column counts go wrong."""
    def render(rows):
        return "\n".join(sep.join(row) for row in [["text", "label"], *rows]) + "\n"
    return st.lists(st.lists(CELL, min_size=0, max_size=3), min_size=0, max_size=5).map(render)


def jsonl_lines():
    value = st.none() | st.booleans() | st.integers(-2, 3) | st.floats() | TEXT | st.lists(TEXT, max_size=2)
    record = st.fixed_dictionaries({"text": value, "label": value | st.sampled_from(LABELS)})
    line = record.map(json.dumps) | st.sampled_from(["", "{", "[1]", "null", "{\"text\": \"a\"}"]) | TEXT
    return st.lists(line, max_size=5).map(lambda lines: "\n".join(lines) + "\n")


def conll_lines():
    line = st.sampled_from(["", "-DOCSTART- -X- O", "EU B-ORG", "rejects O", "x", "a b c O", "a\tB-PER", "nan O"]) | TEXT
    return st.lists(line, max_size=8).map(lambda lines: "\n".join(lines) + "\n")


CONTENT = {"tsv": table("\t"), "csv": table(","), "jsonl": jsonl_lines(), "conll": conll_lines()}


def file_bytes(fmt: str):
    """A file of the format, encoded in a random encoding, or plain random bytes."""
    encoded = st.tuples(CONTENT[fmt], st.sampled_from(ENCODINGS)).map(
        lambda t: t[0].encode(t[1], errors="surrogatepass"))
    return encoded | st.binary(max_size=64)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


def task_overrides(folder: Path, fmt: str, kind: str) -> list[str]:
    text = [] if fmt == "conll" else ["task.text=[text]"]
    return ["task=custom", f"task.data_dir={folder}", f"task.format={fmt}", f"task.kind={kind}", *text]


def write_files(folder: Path, fmt: str, train: bytes, dev: bytes) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ext = "txt" if fmt == "conll" else fmt
    (folder / f"train.{ext}").write_bytes(train)
    (folder / f"dev.{ext}").write_bytes(dev)


def validate(folder: Path, fmt: str, kind: str, tokenizer):
    """What a run does with the files before its model loads (and the tokenization right after): the task, or a
    PastaError. Anything else, or a label that is not finite, fails the test."""
    task = load_task(task_spec(compose(task_overrides(folder, fmt, kind))))
    for name, split in task.splits.items():
        labels = split["label"]
        flat = [x for row in labels for x in row] if kind == "token_classification" else labels
        assert all(math.isfinite(x) for x in flat), name
    encode(task, tokenizer, 32)
    return task


def kind_for(fmt: str):
    return st.just("token_classification") if fmt == "conll" else st.sampled_from(["classification", "regression"])


@pytest.mark.parametrize("fmt", sorted(CONTENT))
def test_hostile_data_files_are_read_or_refused_in_one_line(fmt, tmp_path, tokenizer):
    @FUZZ
    @given(train=file_bytes(fmt), dev=file_bytes(fmt), kind=kind_for(fmt))
    def check(train, dev, kind):
        write_files(tmp_path / "data", fmt, train, dev)
        try:
            validate(tmp_path / "data", fmt, kind, tokenizer)
        except PastaError as e:
            assert "\n" not in str(e) and str(tmp_path) in str(e), str(e)
    check()


@pytest.mark.slow
@settings(max_examples=8, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fmt=st.sampled_from(["tsv", "csv", "jsonl"]), train=st.data(), kind=st.sampled_from(["classification",
                                                                                            "regression"]))
def test_hostile_data_files_through_pasta_train_train_or_exit_2(tiny_bert, tmp_path, fmt, train, kind):
    data = tmp_path / "data"
    write_files(data, fmt, train.draw(file_bytes(fmt)), train.draw(file_bytes(fmt)))
    run_dir = tmp_path / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    code, _, err = pasta_train(f"model.name_or_path={tiny_bert}", *TINY_RUN, *task_overrides(data, fmt, kind),
                               f"hydra.run.dir={run_dir}")
    outcome(code, err, run_dir)


def outcome(code: int, err: str, run_dir: Path) -> None:
    """Trained (exit 0, every file strict and finite), or one line and no folder (exit 2); a diverged run (exit 1)
    is one line too, its folder strict and finite."""
    assert "Traceback" not in err, err
    if code == 2:
        assert len(error_lines(err)) == 1 and not run_dir.exists(), err
        return
    assert code in (0, 1), err
    if code == 1:
        assert len(error_lines(err)) == 1 and "not finite" in err or "became" in err, err
    check_run_folder(run_dir)


def number():
    return st.integers(-3, 3) | st.sampled_from([0.0, -0.0, 0.5, 0.999, 1.0, 1e-30, 1e30, 1e999, -1e999, 2**40]) | \
        st.floats(allow_nan=True, allow_infinity=True, width=32)


def word():
    return st.sampled_from(["null", "true", "abc", "''", "[]", "[1,2]", "{}", "fp16", "bf16", "cpu", "cuda", "dev",
                            "heldout", "linear", "constant", "full", "shared", "eager", "flash_attention_2",
                            "accuracy", "${oc.env:HOME}", "a=b", "'x y'", "\u00e9"])


def render(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    return str(value)


TYPED_KEYS = [f"trainer.{k}" for k in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "max_length",
                                       "precision", "device", "eval_every_steps", "early_stopping_patience",
                                       "main_metric", "selection", "heldout_fraction", "log_every_steps",
                                       "checkpoint_every_steps", "group_by_length", "pad_to_max_length", "packing",
                                       "gradient_checkpointing", "compile", "num_workers", "progress")] + \
    [f"optim.{k}" for k in ("lr", "weight_decay", "warmup_ratio", "eps", "max_grad_norm", "schedule", "betas")] + \
    ["model.dropout", "model.attn_implementation", "method.variant", "method.dropout", "method.init_std", "seed",
     "recipe", "task.max_train_samples", "task.max_eval_samples", "task.sample_seed", "task.metrics",
     "task.main_metric", "task.label", "task.eval_splits"]  # (max_steps stays 1: the one-step budget)
OVERRIDE = st.tuples(st.sampled_from(TYPED_KEYS), number() | st.booleans() | word()).map(
    lambda kv: f"{kv[0]}={render(kv[1])}")


@pytest.mark.slow
@settings(max_examples=30, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(overrides=st.lists(OVERRIDE, min_size=1, max_size=3))
def test_random_values_of_every_typed_key_train_or_exit_2(tiny_bert, tmp_path, overrides):
    run_dir = tmp_path / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    code, _, err = pasta_train(f"model.name_or_path={tiny_bert}", *TINY_RUN, *TINY_BUILTIN, *overrides,
                               f"hydra.run.dir={run_dir}")
    outcome(code, err, run_dir)

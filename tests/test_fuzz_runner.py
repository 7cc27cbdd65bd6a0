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

from pasta_cli.data import Format, Kind, TaskSpec, encode, load_task
from pasta_cli.errors import PastaError

pytestmark = pytest.mark.fuzz
FUZZ = settings(max_examples=50, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

GOOD_LABELS = ["0", "1", "0.5", "-3.5", "2e3"]  # class names and scores alike
BAD_LABELS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e39", "", " ", "\"", "1,5"]
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12) | \
    st.sampled_from(["", " ", "\"", "\"a,b\"", "a\tb", "a\nb", "x" * 5000, "[SEP]", "\u00e9t\u00e9", "\ud83d"])
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]


def mostly(good, bad):
    """`good` nine times in ten: a file with one hostile row among good ones gets past the first line."""
    return st.one_of(*[good] * 9, bad)


def table(sep: str):
    """Delimited rows under a header: text and label, now and then a row of another width or a hostile label."""
    good = st.tuples(TEXT, st.sampled_from(GOOD_LABELS)).map(list)
    bad = st.lists(TEXT | st.sampled_from(BAD_LABELS), max_size=3) | st.tuples(TEXT, st.sampled_from(BAD_LABELS)).map(list)

    def render(rows):
        return "\n".join(sep.join(row) for row in [["text", "label"], *rows]) + "\n"
    return st.lists(mostly(good, bad), min_size=0, max_size=5).map(render)


def jsonl_lines():
    value = st.none() | st.booleans() | st.integers(-2, 3) | st.floats() | TEXT | st.lists(TEXT, max_size=2)
    good = st.fixed_dictionaries({"text": TEXT, "label": st.sampled_from(GOOD_LABELS) | st.integers(0, 1)})
    bad = st.fixed_dictionaries({"text": value, "label": value | st.sampled_from(BAD_LABELS)})
    line = mostly(good.map(json.dumps), bad.map(json.dumps) | st.sampled_from(["", "{", "[1]", "null"]) | TEXT)
    return st.lists(line, min_size=1, max_size=5).map(lambda lines: "\n".join(lines) + "\n")


def conll_lines():
    good = st.tuples(st.from_regex(r"[A-Za-z\u00e9]{1,6}", fullmatch=True), st.sampled_from(["O", "B-ORG", "I-ORG",
                                                                                            "B-PER"])).map(" ".join)
    bad = st.sampled_from(["", "-DOCSTART- -X- O", "x", "a b c O", "a\tB-PER", "nan O", "\u00a0 O"]) | TEXT
    return st.lists(mostly(good, bad), max_size=8).map(lambda lines: "\n".join(lines) + "\n")


CONTENT = {"tsv": table("\t"), "csv": table(","), "jsonl": jsonl_lines(), "conll": conll_lines()}


def file_bytes(fmt: str):
    """A file of the format in a random encoding (UTF-8 mostly), or now and then plain random bytes."""
    encoded = st.tuples(CONTENT[fmt], st.sampled_from(ENCODINGS)).map(
        lambda t: t[0].encode(t[1], errors="surrogatepass" if t[1].startswith("utf") else "replace"))
    return mostly(encoded, st.binary(max_size=64))


def dev_bytes(fmt: str):
    """The dev file: another hostile file, or train's own bytes (so that a good train file is seen whole)."""
    return st.none() | file_bytes(fmt)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


def task_overrides(folder: Path, fmt: str, kind: str) -> list[str]:
    text = [] if fmt == "conll" else ["task.text=[text]"]
    return ["task=custom", f"task.data_dir={folder}", f"task.format={fmt}", f"task.kind={kind}", *text]


def write_files(folder: Path, fmt: str, train: bytes, dev: bytes | None) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ext = "txt" if fmt == "conll" else fmt
    (folder / f"train.{ext}").write_bytes(train)
    (folder / f"dev.{ext}").write_bytes(train if dev is None else dev)


def validate(folder: Path, fmt: str, kind: str, tokenizer):
    """What a run does with the files before its model loads (and the tokenization right after): the task, or a
    PastaError. Anything else, or a label that is not finite, fails the test."""
    task = load_task(TaskSpec(name="fuzz", kind=Kind(kind), format=Format(fmt), data_dir=str(folder),
                              text=None if fmt == "conll" else ["text"], label=None if fmt == "conll" else "label"))
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
    @given(train=file_bytes(fmt), dev=dev_bytes(fmt), kind=kind_for(fmt))
    def check(train, dev, kind):
        write_files(tmp_path / "data", fmt, train, dev)
        try:
            validate(tmp_path / "data", fmt, kind, tokenizer)
        except PastaError as e:
            assert "\n" not in str(e) and str(tmp_path) in str(e), str(e)
    check()


@pytest.mark.slow
@settings(max_examples=10, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fmt=st.sampled_from(["tsv", "csv", "jsonl"]), train=st.data(), kind=st.sampled_from(["classification",
                                                                                            "regression"]))
def test_hostile_data_files_through_pasta_train_train_or_exit_2(tiny_bert, tmp_path, fmt, train, kind):
    data = tmp_path / "data"
    write_files(data, fmt, train.draw(file_bytes(fmt)), train.draw(dev_bytes(fmt)))
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


def hostile():
    """Any value for any key: numbers at the edges (NaN, infinities, huge), booleans, words of other keys."""
    number = st.integers(-3, 3) | st.sampled_from([0.0, -0.0, 1e-30, 1e30, 1e999, -1e999, 2**40]) | \
        st.floats(allow_nan=True, allow_infinity=True, width=32)
    words = st.sampled_from(["null", "true", "abc", "''", "[]", "[1,2]", "{}", "fp16", "cuda", "heldout", "constant",
                             "shared", "eager", "flash_attention_2", "accuracy", "${oc.env:HOME}", "a=b", "'x y'",
                             "\u00e9"])
    return number | st.booleans() | words


def render(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    return str(value)


def choices(*values: str):
    return st.sampled_from(values)


SMALL_INT = st.integers(-1, 40)
MAYBE_INT = SMALL_INT | st.just("null")
SHARE = st.floats(-0.5, 1.5) | st.sampled_from([1e-30, 1e30])
# every typed key with the values a user would plausibly give it (some of them wrong); max_steps stays 1, the budget
TYPED = {
    **{f"trainer.{k}": SMALL_INT for k in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "max_length",
                                           "log_every_steps", "num_workers")},
    **{f"trainer.{k}": MAYBE_INT for k in ("eval_every_steps", "early_stopping_patience", "checkpoint_every_steps")},
    **{f"trainer.{k}": st.booleans() for k in ("group_by_length", "pad_to_max_length", "packing",
                                               "gradient_checkpointing", "compile", "progress")},
    "trainer.precision": choices("fp32", "bf16", "fp16", "fp8"), "trainer.device": choices("auto", "cpu", "cuda", "tpu"),
    "trainer.selection": choices("dev", "heldout", "test"), "trainer.heldout_fraction": SHARE,
    "trainer.main_metric": choices("null", "accuracy", "f1", "matthews", "pearson"),
    **{f"optim.{k}": SHARE for k in ("lr", "weight_decay", "warmup_ratio", "eps")},
    "optim.max_grad_norm": SHARE | st.just("null"), "optim.schedule": choices("linear", "constant", "cosine"),
    "optim.betas": choices("[0.9,0.999]", "[0.5,0.5]", "[1,2]", "[0.9]"),
    "model.dropout": SHARE | st.just("null"), "model.attn_implementation": choices("sdpa", "eager", "flash_attention_2",
                                                                                    "flex"),
    "method.variant": choices("full", "cls_only", "sep_only", "shared", "classifier_only", "bogus"),
    "method.dropout": SHARE | st.just("null"), "method.init_std": SHARE, "seed": SMALL_INT | st.just(2**33),
    "recipe": choices("own", "pasta", "mine"),
    "task.max_train_samples": MAYBE_INT, "task.max_eval_samples": MAYBE_INT, "task.sample_seed": SMALL_INT,
    "task.metrics": choices("[accuracy]", "[accuracy,f1]", "[pearson]", "[]"),
    "task.main_metric": choices("null", "accuracy", "f1"), "task.label": choices("label", "text_a", "nope"),
    "task.eval_splits": choices("[validation]", "[test]", "[train]", "[]"),
}
OVERRIDE = st.sampled_from(sorted(TYPED)).flatmap(
    lambda key: mostly(TYPED[key], hostile()).map(lambda value: f"{key}={render(value)}"))


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

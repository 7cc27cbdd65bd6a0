"""Issue #21, the runner: no non-finite number anywhere, nothing recorded that did not apply, and the command line's
edges. Each test holds a row R<n> of docs/RELIABILITY.md ("Issue #21: the runner"). pasta-train runs in-process
(runner_fixtures.pasta_train) on a tiny BERT folder, so a case costs a second, not an interpreter start."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from runner_fixtures import (
    TINY_BUILTIN,
    TINY_RUN,
    check_run_folder,
    error_lines,
    pasta_train,
    save_tiny_bert,
    strict_json,
    umask,
)
from safetensors.torch import save_file

from pasta_cli import files
from pasta_cli.config import check_config, compose, task_spec
from pasta_cli.data import load_task
from pasta_cli.errors import PastaError
from pasta_cli.training import loop

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def tiny_args(tiny_bert: Path, run_dir: Path, *more: str) -> list[str]:
    return [f"model.name_or_path={tiny_bert}", *TINY_RUN, *TINY_BUILTIN, f"hydra.run.dir={run_dir}", *more]


def refused(tiny_bert, tmp_path, *args, flags=()) -> str:
    """pasta-train ARGS is one error line, exit 2, and no run folder; returns the line."""
    code, _, err = pasta_train(*flags, *tiny_args(tiny_bert, tmp_path / "run", *args))
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pasta-train: error: "), err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    return lines[0]


# R1-R3: settings that are not finite or out of range, refused by check_config before anything is written
@pytest.mark.parametrize("override,message", [
    ("optim.lr=nan", "optim.lr=nan is not a finite number"),
    ("optim.lr=inf", "optim.lr=inf is not a finite number"),
    ("optim.lr=1e999", "optim.lr=inf is not a finite number"),
    ("optim.weight_decay=-inf", "optim.weight_decay=-inf is not a finite number"),
    ("optim.warmup_ratio=5", "optim.warmup_ratio 5.0: give the share of steps spent warming up, in [0, 1)"),
    ("optim.warmup_ratio=1", "in [0, 1)"),
    ("optim.weight_decay=-0.1", "optim.weight_decay -0.1: give a weight decay of 0 or more"),
    ("optim.eps=0", "optim.eps 0.0: give AdamW's epsilon"),
    ("optim.betas=[0.9,1.5]", "optim.betas [0.9, 1.5]"),
    ("optim.max_grad_norm=nan", "optim.max_grad_norm=nan"),
    ("model.dropout=1.5", "model.dropout 1.5: give a probability in [0, 1)"),
    ("method.dropout=nan", "method.dropout=nan is not a finite number"),
    ("method.init_std=-1", "method.init_std -1"),
    ("task.lr=inf", "task.lr=inf is not a finite number"),
    ("trainer.heldout_fraction=nan", "trainer.heldout_fraction=nan"),
    ("trainer.log_every_steps=0", "trainer.log_every_steps 0"),
    ("trainer.eval_every_steps=-2", "trainer.eval_every_steps -2"),
    ("seed=-1", "seed -1: give a whole number in [0, 4294967296)"),
])
def test_non_finite_or_out_of_range_settings_are_refused_before_a_folder_is_written(override, message):
    with pytest.raises(PastaError, match=None) as err:
        check_config(compose([override]), cuda_available=False)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_optim_lr_nan_through_the_command_line_leaves_no_folder_and_no_hydra_files(tiny_bert, tmp_path):
    # R1: it used to be a traceback after .hydra/ and config.yaml (lr: .nan) were written, blocking a fresh start
    assert "optim.lr=nan is not a finite number" in refused(tiny_bert, tmp_path, "optim.lr=nan")


# R5: keys added with + that the runner never reads
@pytest.mark.parametrize("override,message", [
    ("+trainer.max_step=3", "trainer.max_step is not a setting pasta-train reads, so it would be recorded but never "
                            "used: did you mean trainer.max_steps?"),
    ("+optim.learning_rate=1e-3", "optim.learning_rate is not a setting"),
    ("+method.varient=shared", "did you mean method.variant?"),
    ("+model.dropuot=0.1", "did you mean model.dropout?"),
    ("+task.lables=[a,b]", "did you mean task.labels?"),
    ("+task.builtin.sead=3", "did you mean task.builtin.seed?"),
    ("+sead=3", "did you mean seed?"),
])
def test_keys_added_with_plus_that_nothing_reads_are_refused_with_the_nearest_key(override, message):
    with pytest.raises(PastaError) as err:
        check_config(compose([override]), cuda_available=False)
    assert message in str(err.value)


def test_a_baselines_own_keys_are_checked_against_its_config():
    with pytest.raises(PastaError, match="method.rank is not a setting .* did you mean method.r"):
        check_config(compose(["task=rte", "method=lora", "+method.rank=4"]), cuda_available=False)
    for method in ("pasta", "classifier_only", "bitfit", "adapter", "diff_prune", "prefix"):
        check_config(compose(["task=rte", f"method={method}"]), cuda_available=False)  # their own keys pass
    check_config(compose(["task=custom", "+task.files.dev2=d.csv"]), cuda_available=False)  # files is a dict


# R4: NaN and infinite scores in data files, named by file and line before training
@pytest.mark.parametrize("fmt,text,line", [
    ("csv", "text,label\na b,1.5\nc d,nan\n", 3),
    ("csv", "text,label\na b,inf\n", 2),
    ("tsv", "text\tlabel\na b\t1\nc d\t-Infinity\n", 3),
    ("jsonl", '{"text": "a b", "label": 1}\n{"text": "c", "label": NaN}\n', 2),
    ("jsonl", '{"text": "a b", "label": 1e39}\n', 1),  # finite in Python, infinite as the float32 it is stored as
])
def test_non_finite_scores_in_a_regression_file_are_refused_naming_file_and_line(tmp_path, fmt, text, line):
    (tmp_path / f"train.{fmt}").write_text(text)
    (tmp_path / f"dev.{fmt}").write_text(text)
    cfg = compose(["task=custom", "task.kind=regression", f"task.data_dir={tmp_path}", "task.text=[text]",
                   "task.labels=null", f"task.format={fmt}"])
    with pytest.raises(PastaError, match=rf"train\.{fmt}' line {line}: score .* is not a finite number"):
        load_task(task_spec(cfg))


# R9: a task's files from the command line
@pytest.mark.parametrize("files", [["task.files.validation=mydev.csv"], ["+task.files.validation=mydev.csv"],
                                   ["task.files={train: train.csv, validation: mydev.csv}"]])
def test_a_tasks_files_can_be_named_on_the_command_line(tmp_path, files):
    (tmp_path / "train.csv").write_text("text,label\na b,x\nc d,y\n")
    (tmp_path / "mydev.csv").write_text("text,label\ne f,y\n")
    cfg = compose(["task=custom", f"task.data_dir={tmp_path}", "task.text=[text]", *files])
    task = load_task(task_spec(cfg))
    assert task.spec.files == {"train": "train.csv", "validation": "mydev.csv"} and len(task.splits["validation"]) == 1


# R10: a plain value where a list belongs, in a task YAML
def test_text_as_a_plain_value_in_a_task_yaml_is_a_plain_message(tiny_bert, tmp_path):
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "mine.yaml").write_text("name: mine\nformat: csv\ndata_dir: /x\ntext: text\n")
    line = refused(tiny_bert, tmp_path, "task=mine", flags=("--config-dir", str(tmp_path / "conf")))
    assert "task.text takes a list in brackets: text: [sentence]" in line
    assert "ListConfig" not in line and "AnyNode" not in line


def test_a_key_inside_a_null_section_is_one_line(tiny_bert, tmp_path):
    assert "task.hub.path cannot be set from the command line" in refused(tiny_bert, tmp_path, "task.hub.path=x")


# R12, R13: --version and --help
def test_version_is_pasta_clis_and_help_shows_resolved_values():
    from importlib.metadata import version
    code, out, _ = pasta_train("--version")
    assert code == 0 and out.strip() == f"pasta-train {version('pasta-cli')}"
    code, out, _ = pasta_train("--help")
    from pasta_cli.config import compose
    lr = compose([]).optim.lr  # the built-in task's budget, resolved
    assert code == 0 and "${" not in out and f"lr: {lr}" in out


# R14: the umask's mode, for a file its writer makes anew (safetensors does)
def test_a_file_a_writer_recreates_still_gets_the_umasks_mode(tmp_path):
    def recreate(path):
        os.unlink(path)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)

    with umask(0o022):
        files.write_atomic(tmp_path / "a.bin", recreate)
        files.write_atomic(tmp_path / "b.safetensors", lambda p: save_file({"x": torch.zeros(2)}, p))
    assert [oct(p.stat().st_mode & 0o777) for p in sorted(tmp_path.iterdir())] == [oct(0o644)] * 2


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    with umask(0o022):
        code, out, err = pasta_train(*tiny_args(tiny_bert, run_dir, "trainer.max_steps=2", "trainer.log_every_steps=1"))
    assert code == 0, err
    return run_dir, out


# R6, R14, R15: every file of a run strict, finite, with the umask's mode (adapter files included); train.log written
def test_every_file_of_a_run_is_strict_finite_and_has_the_umasks_mode(finished_run):
    run_dir, out = finished_run
    checked = {p.relative_to(run_dir).as_posix() for p in check_run_folder(run_dir)}
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "results.json", "metrics.jsonl",
            "config.yaml", ".hydra/config.yaml", "checkpoints/last.pt", "train.log"} <= checked
    log = (run_dir / "train.log").read_text()
    assert "step 1/2: loss" in log and "step 2: validation/accuracy=" in log and "done: builtin" in log
    assert "done: builtin" in out


# R16: a finished run given resume=true and a longer budget is skipped, saying why and what to do
def test_a_finished_run_resumed_for_longer_says_why_nothing_trained(tiny_bert, finished_run):
    run_dir, _ = finished_run
    before = (run_dir / "results.json").read_bytes()
    code, _, err = pasta_train(*tiny_args(tiny_bert, run_dir, "resume=true", "trainer.max_steps=24"))
    lines = error_lines(err)
    assert code == 0 and len(lines) == 1 and "already holds a finished run" in lines[0], err
    assert "nothing was trained" in lines[0] and "new hydra.run.dir" in lines[0]
    assert (run_dir / "results.json").read_bytes() == before


def corrupt_at(step: int, how):
    """train_step, with `how(run)` applied to the model just before optimiser step `step` (counted from 1)."""
    real, calls = loop.train_step, []

    def step_fn(run, micro):
        calls.append(1)
        if len(calls) == step:
            how(run)
        return real(run, micro)
    return step_fn


def nan_vectors(run):
    with torch.no_grad():
        run.model.pasta.vectors.fill_(float("nan"))


# R7: a loss that becomes NaN stops the run naming the step; the last good checkpoint and best adapter stay
def test_a_nan_loss_stops_the_run_keeping_the_last_good_checkpoint_and_adapter(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "train_step", corrupt_at(3, nan_vectors))
    run_dir = tmp_path / "run"
    code, _, err = pasta_train(*tiny_args(tiny_bert, run_dir, "trainer.max_steps=6", "trainer.eval_every_steps=2",
                                          "task.builtin.train_size=48"))
    lines = error_lines(err)
    assert code == 1 and len(lines) == 1, err
    assert "the training loss became nan at step 3" in lines[0] and "checkpoints/last.pt (step 2)" in lines[0]
    assert "Traceback" not in err
    check_run_folder(run_dir)
    results = strict_json((run_dir / "results.json").read_text())
    assert results["stopped"]["step"] == 3 and results["best_step"] == 2 and results["best_score"] is not None
    assert torch.load(run_dir / "checkpoints/last.pt", weights_only=False)["state"]["step"] == 2
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [2]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_a_model_broken_by_its_last_step_is_not_scored(tiny_bert, tmp_path, monkeypatch):
    # the loss of step 1 is finite, but the step leaves NaN weights: the evaluation after it must not give a score
    def nan_after_step(run, micro):
        loss = real(run, micro)
        nan_vectors(run)
        return loss
    real = loop.train_step
    monkeypatch.setattr(loop, "train_step", nan_after_step)
    run_dir = tmp_path / "run"
    code, _, err = pasta_train(*tiny_args(tiny_bert, run_dir))
    assert code == 1 and "not finite numbers at step 1" in error_lines(err)[0], err
    results = strict_json((run_dir / "results.json").read_text())
    assert results["best_score"] is None and results["stopped"]["step"] == 1
    assert not (run_dir / "adapter").exists() and not (run_dir / "checkpoints").exists()
    check_run_folder(run_dir)


# R8: Ctrl-C is one line and exit 130; the run resumes
def test_ctrl_c_during_training_is_one_line_and_exit_130_and_the_run_resumes(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "train_step", corrupt_at(3, lambda run: signal.raise_signal(signal.SIGINT)))
    run_dir = tmp_path / "run"
    args = tiny_args(tiny_bert, run_dir, "trainer.max_steps=4", "trainer.eval_every_steps=2",
                     "task.builtin.train_size=48")
    # Python's own Ctrl-C handler, as a fresh pasta-train process has it: a library an earlier test imported in
    # this process (a server, a tracker) may have put its own in place
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, _, err = pasta_train(*args)
    finally:
        signal.signal(signal.SIGINT, before)
    lines = error_lines(err)
    assert code == 130 and "Traceback" not in err, err
    assert lines == [f"pasta-train: interrupted at step 2 (last checkpoint: step 2); resume=true "
                     f"hydra.run.dir={run_dir} to continue"]
    monkeypatch.undo()
    code, _, err = pasta_train(*args, "resume=true")
    assert code == 0, err
    assert strict_json((run_dir / "results.json").read_text())["steps"] == 4


# R17, R18: found by the data fuzzer (tests/test_fuzz_runner.py)
def test_a_lone_surrogate_escape_in_jsonl_is_refused_by_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "a \\ud83d b", "label": "y"}\n')
    (tmp_path / "dev.jsonl").write_text('{"text": "a", "label": "x"}\n')
    cfg = compose(["task=custom", f"task.data_dir={tmp_path}", "task.text=[text]", "task.format=jsonl"])
    with pytest.raises(PastaError, match=r"train\.jsonl' line 2: the escape \\ud83d is half of a UTF-16 surrogate"):
        load_task(task_spec(cfg))


def test_a_label_holding_a_newline_keeps_the_error_on_one_line(tmp_path):
    (tmp_path / "train.csv").write_text('text,label\na,"x\ny"\nb,z\n')
    (tmp_path / "dev.csv").write_text("text,label\na,w\n")
    cfg = compose(["task=custom", f"task.data_dir={tmp_path}", "task.text=[text]"])
    with pytest.raises(PastaError) as err:
        load_task(task_spec(cfg))
    assert "unknown label 'w'" in str(err.value) and "'x\\ny', z" in str(err.value) and "\n" not in str(err.value)


def test_a_lora_adapters_peft_files_get_the_umasks_mode(tmp_path):
    from tiny_models import tiny

    from pasta_cli.adapter import save_adapter
    from pasta_cli.methods import apply_method
    model, tokenizer = tiny("bert")
    settings = {"name": "lora", "r": 2, "alpha": 4, "dropout": 0.0, "target_modules": None}
    model = apply_method(model, tokenizer, settings, pair=True)
    with umask(0o022):
        save_adapter(model, tmp_path / "adapter", backbone="tiny", head="classification", pair=True, method="lora",
                     settings=settings)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "adapter").iterdir()}
    assert "adapter_model.safetensors" in modes and set(modes.values()) == {oct(0o644)}, modes


# R19-R21: found by the overrides fuzzer (or in its log); each refused before a folder is written
@pytest.mark.parametrize("overrides,message", [
    (["model.attn_implementation=0"], "unknown model.attn_implementation '0': choose one of auto, sdpa, eager"),
    (["model.attn_implementation=flash_attention_2"], "runs on a CUDA GPU: use auto, sdpa or eager on CPU"),
    (["trainer.epochs=${oc.env:HOME}"], "trainer.epochs: While dereferencing interpolation '${oc.env:HOME}'"),
])
def test_settings_the_overrides_fuzzer_found_are_refused_by_check_config(overrides, message):
    with pytest.raises(PastaError) as err:
        check_config(compose(overrides), cuda_available=False)
    assert message in str(err.value)


def test_a_negative_sample_seed_is_refused():
    with pytest.raises(PastaError, match="task.sample_seed must be 0 or more"):
        load_task(task_spec(compose(["task.sample_seed=-3", "task.max_train_samples=4"])))

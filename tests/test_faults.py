"""Fault injection: every way issue #13 found a run folder could lie, and a crash at every write point.

Each case is one row of docs/RELIABILITY.md. A refused run must print one line, exit 2 and leave the
folder exactly as it was (compared file by file: names, sizes, bytes, modification times); a crash
must leave every file whole and the run resumable to the numbers an uninterrupted run gets.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pasta_cli import files, run_folder
from pasta_cli.config import compose
from pasta_cli.errors import PastaError, WriteError
from pasta_cli.train import run_job
from pasta_cli.training import checkpoint, folder

pytestmark = [pytest.mark.faults, pytest.mark.slow]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
# 64 rows, batch 16: 4 steps an epoch, 8 in all; an evaluation and a checkpoint every 2 steps; no dropout,
# so a resumed run must end with exactly the numbers of a straight one
BUILTIN = ["task.builtin.train_size=64", "task.builtin.dev_size=32", "task.builtin.test_size=8"]
SETTINGS = ["trainer.epochs=2", "trainer.batch_size=16", "trainer.eval_batch_size=32", "trainer.max_length=48", "trainer.progress=false",
         "trainer.eval_every_steps=2", "trainer.checkpoint_every_steps=2", "method.dropout=0.0", "model.dropout=0.0"]
SMALL = BUILTIN + SETTINGS


def cli(*args, cwd) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run([sys.executable, "-m", "pasta_cli.train", *flags, *SMALL, *overrides], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def one_error_line(out: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == code and len(lines) == 1 and lines[0].startswith("pasta-train: error: "), out.stderr
    return lines[0]


def snapshot(root: Path) -> dict:
    """Every file and folder under root: its size, bytes and modification time."""
    state = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        state[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns, digest)
    return state


def readable(run_dir: Path) -> None:
    """Every file of the folder parses as what it claims to be, and no temporary file is left."""
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".adapter.")]
    for p in run_dir.rglob("*"):
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in p.read_text().splitlines()]
        elif p.suffix == ".yaml":
            yaml.safe_load(p.read_text())
        elif p.suffix == ".safetensors":
            load_file(str(p))
        elif p.suffix == ".pt":
            torch.load(p, weights_only=False)
        elif p.suffix == ".png":
            assert p.read_bytes().startswith(b"\x89PNG")


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class CountWrites:
    """os.replace as the atomic writer calls it, counted per target file (and made to fail on request)."""

    def __init__(self, fail_on: tuple[str, int] | None = None, error: OSError | None = None):
        self.counts: dict[str, int] = {}
        self.fail_on, self.error = fail_on, error
        self.real = os.replace

    def __call__(self, src, dst):
        name = f"{Path(dst).parent.name}/{Path(dst).name}" if Path(dst).parent.name in ("adapter", "checkpoints") \
            else Path(dst).name
        self.counts[name] = self.counts.get(name, 0) + 1
        if self.fail_on == (name, self.counts[name]):
            if Path(src).is_file():
                with open(src, "r+b") as f:  # the disk filled up half-way through the file
                    f.truncate(max(1, Path(src).stat().st_size // 2))
            raise self.error
        return self.real(src, dst)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run (in-process), with how many times each file was written."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    counter = CountWrites()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files.os, "replace", counter)
        results = run_job(compose(SMALL), run_dir)
    assert results["steps"] == 8 and steps(run_dir) == [2, 4, 6, 8]
    return run_dir, results, counter.counts


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run finished through the command line (with Hydra's .hydra/ files)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    out = cli(f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and (run_dir / "results.json").is_file()
    return run_dir


def crash_on_save(cfg, run_dir: Path, nth: int) -> None:
    """Run the job in-process until its nth checkpoint save, which crashes (the (nth-1)th checkpoint stays)."""
    real_save, calls = checkpoint.save, []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise KeyboardInterrupt("injected crash")
        return real_save(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "save", crash)
        with pytest.raises(KeyboardInterrupt):
            run_job(cfg, run_dir)


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    """A run that crashed at step 4, right before its second checkpoint: checkpoint at step 2."""
    run_dir = tmp_path_factory.mktemp("unfinished") / "run"
    crash_on_save(compose(SMALL), run_dir, 2)
    assert checkpoint.peek(run_dir / checkpoint.CHECKPOINT)["state"]["step"] == 2
    assert steps(run_dir) == [2, 4] and not (run_dir / "results.json").exists()
    return run_dir


def copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


# --- resume checks what it resumes -------------------------------------------------------------------

@pytest.mark.parametrize("change,listed", [
    ("optim.lr=9e-3", "optim.lr: "),
    ("method.variant=cls_only", "method.variant: full -> cls_only"),
])
def test_resume_with_other_settings_is_refused_listing_each_difference(unfinished, tmp_path, change, listed):
    run_dir = copy(unfinished, tmp_path)
    before = snapshot(run_dir)
    line = one_error_line(cli(f"hydra.run.dir={run_dir}", "resume=true", change, cwd=tmp_path))
    assert listed in line and "resume with the checkpoint's values" in line.lower()
    assert "-> 0.009" in line or "lr" not in change
    assert snapshot(run_dir) == before


def test_resume_may_extend_the_epochs_and_the_record_says_so(unfinished, tmp_path):
    run_dir = copy(unfinished, tmp_path)
    # what a kill -9 mid-write leaves: the atomic writer's temp file, PEFT's temp folder; the resume removes them
    (run_dir / "checkpoints" / ".last.pt.x1y2.tmp").write_bytes(b"half")
    (run_dir / ".adapter.z3").mkdir()
    results = run_job(compose([*SMALL, "resume=true", "trainer.epochs=3"]), run_dir)
    assert results["steps"] == 12 and steps(run_dir) == [2, 4, 6, 8, 10, 12]
    assert results["resumes"] == [{"step": 2, "changed": {"trainer.epochs": [2, 3]}}]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["epochs"] == 3
    readable(run_dir)


def test_a_checkpoint_without_settings_is_not_resumed(unfinished, tmp_path):
    run_dir = copy(unfinished, tmp_path)
    ckpt = torch.load(run_dir / checkpoint.CHECKPOINT, weights_only=False)
    del ckpt["settings"]
    torch.save(ckpt, run_dir / checkpoint.CHECKPOINT)
    with pytest.raises(PastaError, match="records no settings"):
        run_job(compose([*SMALL, "resume=true"]), run_dir)


def test_a_foreign_checkpoint_is_named_in_one_line(unfinished, tmp_path):
    run_dir = copy(unfinished, tmp_path)
    (run_dir / checkpoint.CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(PastaError, match=r"cannot read checkpoint '.*last\.pt'"):
        run_job(compose([*SMALL, "resume=true"]), run_dir)


# --- run folders -------------------------------------------------------------------------------------

def test_a_fresh_start_in_an_unfinished_folder_is_refused_and_touches_nothing(unfinished, tmp_path):
    run_dir = copy(unfinished, tmp_path)
    before = snapshot(run_dir)
    line = one_error_line(cli(f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert "holds an unfinished run" in line and "resume=true to continue it" in line
    assert snapshot(run_dir) == before


def test_a_refused_run_in_a_finished_folder_leaves_it_and_its_hydra_files_untouched(finished, tmp_path):
    before = snapshot(finished)
    line = one_error_line(cli(f"hydra.run.dir={finished}", "optim.lr=9e-3", cwd=tmp_path))
    assert "already holds a finished run" in line
    assert snapshot(finished) == before


def test_resume_true_on_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(PastaError, match="holds no run to resume"):
        run_job(compose([*SMALL, "resume=true"]), tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_a_sweep_resumes_its_interrupted_job_to_the_straight_runs_numbers(unfinished, straight, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(unfinished, sweep / "job")
    out = cli("-m", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((sweep / "job" / "results.json").read_text())
    assert steps(sweep / "job") == [2, 4, 6, 8] and results["resumes"] == [{"step": 2, "changed": {}}]
    assert results["best_scores"] == straight[1]["best_scores"]
    assert "resuming it from its checkpoint" in (sweep / "job" / "train.log").read_text() + out.stdout


def test_a_second_process_on_the_same_folder_is_refused_at_once(unfinished, tmp_path):
    run_dir = copy(unfinished, tmp_path)
    before = snapshot(run_dir)
    with folder.FolderLock(run_dir):  # another process holds the folder
        line = one_error_line(cli(f"hydra.run.dir={run_dir}", "resume=true", cwd=tmp_path))
    assert "another pasta-train process is running in" in line
    assert snapshot(run_dir) == before


def test_the_lock_dies_with_a_killed_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pasta_cli.training.folder import FolderLock\n"
        f"lock = FolderLock(Path({str(tmp_path)!r})).__enter__(); print('locked', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(PastaError, match="another pasta-train process"):
        folder.FolderLock(tmp_path).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with folder.FolderLock(tmp_path):  # no stale lock: the kernel released it
        pass


def test_a_reports_probe_does_not_refuse_a_job_starting_in_that_instant(tmp_path):
    import fcntl
    import threading

    probe = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # what is_running() holds, here for 0.2 s
    threading.Timer(0.2, os.close, (probe,)).start()
    assert run_folder.is_running(tmp_path) is False  # a shared probe is not a run
    with folder.FolderLock(tmp_path):  # the job waits the probe out instead of calling it another run
        assert run_folder.is_running(tmp_path)


# --- inputs checked before any training time is spent -------------------------------------------------

def own_task(tmp_path: Path, train: str, validation: str) -> list[str]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text(train)
    (data / "dev.tsv").write_text(validation)
    return ["task=custom", "task.name=mine", "task.format=tsv", f"task.data_dir={data}", "task.text=[sentence]",
            "task.label=label"]  # files: train.tsv and dev.tsv, the custom task's defaults


ROWS = "sentence\tlabel\n" + "".join(f"a sentence {i}\t{i % 2}\n" for i in range(8))


@pytest.mark.parametrize("case,overrides,message", [
    ("dev file with a header and no rows", lambda t: own_task(t, ROWS, "sentence\tlabel\n"), "dev.tsv"),
    ("empty train file", lambda t: own_task(t, "", ROWS), "train.tsv"),
    ("empty dev file", lambda t: own_task(t, ROWS, ""), "dev.tsv"),
    ("max_length beyond the model", lambda t: [*BUILTIN, "trainer.max_length=10000"], "beyond minilm's 512 positions"),
    ("eval_batch_size=0", lambda t: [*BUILTIN, "trainer.eval_batch_size=0"], "trainer.eval_batch_size must be a positi"),
    ("batch_size=-1", lambda t: [*BUILTIN, "trainer.batch_size=-1"], "trainer.batch_size must be a positive"),
    ("a folder that is not a model", lambda t: [*BUILTIN, f"model.name_or_path={t}"], "folder without config.json"),
])
def test_bad_input_is_refused_before_training(tmp_path, case, overrides, message):
    run_dir = tmp_path / "run"
    with pytest.raises(PastaError, match=message):
        run_job(compose([*SETTINGS, *overrides(tmp_path)]), run_dir)
    assert not run_dir.exists(), case


def test_a_model_without_special_tokens_is_refused_for_that_reason(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    tok = GPT2Tokenizer(vocab=vocab, merges=[])
    GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(PastaError, match="inserts no special tokens") as err:
        run_job(compose([*SMALL, f"model.name_or_path={tmp_path / 'gpt2'}"]), tmp_path / "run")
    assert "pad token" not in str(err.value)


# --- adapters ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_pair_adapter_refuses_a_single_sentence_and_the_reverse(tmp_path, family):
    from tiny_models import tiny

    from pasta_cli.adapter import load_adapter, save_adapter
    from pasta_cli.pasta import add_pasta

    for pair in (True, False):
        model, tok = tiny(family)
        backbone = tmp_path / f"backbone{pair}"
        model.save_pretrained(backbone)
        tok.save_pretrained(backbone)
        add_pasta(model, tok, pair=pair)
        save_adapter(model, tmp_path / f"adapter{pair}", backbone=str(backbone), head="classification", pair=pair)
        loaded, loaded_tok = load_adapter(tmp_path / f"adapter{pair}")
        two, one = loaded_tok("the man", "the dog", return_tensors="pt"), loaded_tok("the man", return_tensors="pt")
        right, wrong = (two, one) if pair else (one, two)
        loaded(**right)  # the input form it was trained on
        trained = "trained on sentence pairs" if pair else "trained on single sentences"
        for m in (model, loaded):
            with pytest.raises(PastaError, match=f"{trained} .* but row 0 has"):
                m(**wrong)


# --- W&B ---------------------------------------------------------------------------------------------

def test_wandb_mode_comes_from_the_environment_unless_the_config_sets_it(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert compose(["logger=wandb"]).logger.mode == "offline"
    assert compose(["logger=wandb", "logger.mode=disabled"]).logger.mode == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert compose(["logger=wandb"]).logger.mode == "online"


# --- a crash at every write point --------------------------------------------------------------------

WRITE_POINTS = ["config.yaml", "metrics.jsonl", "checkpoints/last.pt", "adapter/adapter_model.safetensors",
                "adapter/adapter_config.json", "norms.png", "dev_predictions.tsv", "results.json"]


@pytest.mark.parametrize("target", WRITE_POINTS)
def test_a_full_disk_at_any_write_leaves_whole_files_and_a_run_that_resumes(straight, tmp_path, monkeypatch, target):
    written = straight[2][target]
    nth = 2 if written >= 2 else 1  # the second write where there is one, so a previous version exists
    counter = CountWrites((target, nth), OSError(errno.ENOSPC, "No space left on device"))
    monkeypatch.setattr(files.os, "replace", counter)
    run_dir = tmp_path / "run"
    with pytest.raises(WriteError, match=f"cannot write '{run_dir / target}'.*No space left") as err:
        run_job(compose(SMALL), run_dir)
    assert err.value.exit_code == 1
    readable(run_dir)
    monkeypatch.setattr(files.os, "replace", counter.real)
    started = any((run_dir / name).exists() for name in folder.RUN_FILES)
    results = run_job(compose([*SMALL, f"resume={started}"]), run_dir)
    readable(run_dir)
    assert steps(run_dir) == [2, 4, 6, 8]
    assert results["best_scores"] == straight[1]["best_scores"] and results["best_step"] == straight[1]["best_step"]


def test_torch_saves_full_disk_error_is_one_line_and_leaves_no_temp_file(unfinished, tmp_path, monkeypatch):
    run_dir = copy(unfinished, tmp_path)
    before = (run_dir / checkpoint.CHECKPOINT).read_bytes()

    def full_disk(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(WriteError, match=r"cannot write '.*last\.pt' \(RuntimeError: \[enforce fail.*MiB free"):
        run_job(compose([*SMALL, "resume=true"]), run_dir)
    assert (run_dir / checkpoint.CHECKPOINT).read_bytes() == before
    readable(run_dir)


def test_a_read_only_folder_is_one_line_exit_2(tmp_path, monkeypatch):
    counter = CountWrites(("config.yaml", 1), PermissionError(errno.EACCES, "Permission denied"))
    monkeypatch.setattr(files.os, "replace", counter)
    with pytest.raises(WriteError, match="Permission denied") as err:
        run_job(compose(SMALL), tmp_path / "run")
    assert err.value.exit_code == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the monkeypatched case stands in")
def test_a_really_read_only_folder_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        line = one_error_line(cli(f"hydra.run.dir={run_dir}", cwd=tmp_path))
    finally:
        run_dir.chmod(0o755)
    assert "Permission denied" in line and str(run_dir) in line


def test_a_refused_job_in_a_sweep_is_one_line_and_the_other_jobs_run(tmp_path):
    sweep = tmp_path / "sweep"
    out = cli("-m", "trainer.max_length=10000,48", "trainer.max_steps=2", f"hydra.sweep.dir={sweep}",
              "hydra.sweep.subdir=${hydra.job.num}", cwd=tmp_path)
    errors = [line for line in out.stderr.splitlines() if line.startswith("pasta-train: error:")]
    assert out.returncode == 2 and len(errors) == 1 and "beyond minilm's 512 positions" in errors[0], out.stderr
    assert [p.parent.name for p in sweep.rglob("results.json")] == ["1"] and not (sweep / "0").exists()

"""Scale and observe on CPU: torchrun (1 node x 2, 2 nodes x 1 on loopback), resume after SIGKILL, W&B, sweeps."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pasta_cli.config import compose
from pasta_cli.train import run_job

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
# no dropout anywhere, so 1 process and 2 processes see exactly the same computation
SMALL = ["task.builtin.train_size=64", "task.builtin.dev_size=48", "task.builtin.test_size=8", "trainer.epochs=2", "trainer.progress=false",
         "trainer.eval_batch_size=48", "method.dropout=0.0", "model.dropout=0.0", "trainer.max_length=48"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TRAIN = ["-m", "pasta_cli.train"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(run_dir: Path) -> list[float]:
    return [json.loads(l)["validation/accuracy"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_single(run_dir: Path, *extra) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *TRAIN, *SMALL, *extra, f"hydra.run.dir={run_dir}"],
                         env=ENV, capture_output=True, text=True, timeout=600, cwd=run_dir.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    run_single(run_dir, "trainer.batch_size=16")
    return run_dir


def test_torchrun_two_processes_make_one_run_with_the_same_metrics(tmp_path, one_process):
    cmd = [*TORCHRUN, "--nproc_per_node", "2", "--master_port", str(free_port()), *TRAIN, *SMALL,
           "trainer.batch_size=8"]
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = list((tmp_path / "outputs").rglob("results.json"))
    assert len(results) == 1  # both ranks wrote into one run folder, rank 0 alone saved
    run_dir = results[0].parent
    assert len([p for p in run_dir.parent.iterdir()]) == 1
    saved = json.loads(results[0].read_text())
    assert saved["devices"] == 2 and saved["effective_batch_size"] == 16
    assert metrics(run_dir) == metrics(one_process)


def test_two_nodes_on_loopback_match_one_process(tmp_path, one_process):
    port = free_port()
    cmd = [*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "pasta-test", *TRAIN, *SMALL, "trainer.batch_size=8"]
    nodes = [subprocess.Popen(cmd, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [n.communicate(timeout=600) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), outs[0][1][-2000:] + outs[1][1][-2000:]
    results = list((tmp_path / "outputs").rglob("results.json"))
    assert len(results) == 1
    assert json.loads(results[0].read_text())["devices"] == 2
    assert metrics(results[0].parent) == metrics(one_process)


def test_sigkill_then_resume_ends_with_the_same_results(tmp_path):
    common = ["trainer.batch_size=8", "trainer.checkpoint_every_steps=3", "trainer.eval_every_steps=4",
              "method.dropout=0.1", "model.dropout=0.1"]  # dropout on: the RNG state must be restored too
    straight = tmp_path / "straight"
    run_single(straight, *common)

    killed = tmp_path / "killed"
    cmd = [sys.executable, *TRAIN, *SMALL, *common, f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(cmd, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "results.json").exists()

    run_single(killed, *common, "resume=true")
    a, b = (json.loads((d / "results.json").read_text()) for d in (straight, killed))
    assert a["steps"] == b["steps"] == 16
    for key in ("best_scores", "best_step", "best_epoch", "best_score"):
        assert a[key] == b[key], key
    assert metrics(straight) == metrics(killed)
    from safetensors.torch import load_file
    va = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    vb = load_file(str(killed / "adapter" / "adapter_model.safetensors"))
    assert all((va[k] - vb[k]).abs().max() < 1e-6 for k in va)


def test_wandb_offline_run_holds_metrics_and_the_heatmap(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose([*SMALL, "trainer.batch_size=16", "logger=wandb", "logger.mode=offline"])
    run_job(cfg, tmp_path / "run")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    images = list(runs[0].rglob("media/images/norms*.png"))
    assert images, "the per-layer norm heatmap was not logged"
    log = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"eval/validation/accuracy" in log and b"best_score" in log  # per-eval metrics and the summary


def test_a_wandb_failure_at_init_warns_and_training_completes(tmp_path, monkeypatch, caplog):
    import wandb

    def broken(*args, **kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")
    monkeypatch.setattr(wandb, "init", broken)
    cfg = compose([*SMALL, "trainer.batch_size=16", "logger=wandb"])
    results = run_job(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "results.json").is_file() and results["steps"] == 8
    assert sum("W&B logging is off" in r.message for r in caplog.records) == 1


def test_a_multirun_rerun_skips_finished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, *TRAIN, "-m", *SMALL, "trainer.max_steps=2", "trainer.batch_size=16", "seed=1,2",
           f"hydra.sweep.dir={sweep}"]
    first = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    done = sorted(sweep.rglob("results.json"))
    assert len(done) == 2
    stamps = [p.stat().st_mtime_ns for p in done]
    second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [p.stat().st_mtime_ns for p in sorted(sweep.rglob("results.json"))] == stamps
    assert (second.stdout + second.stderr).count("already holds a finished run") == 2

"""The run folder's door: who may write into it, and whether a run may start, resume or must stop.

A run folder is a record people trust months later, so before anything is written into it:

- one process at a time: an OS lock (flock) on the folder itself, released by the kernel when the
  process exits, crashes or is killed, so there is no stale lock file to clean up and the lock adds
  nothing to the folder;
- a folder is *new* (none of the run's files), *finished* (results.json) or *unfinished* (run files
  but no results: a crash, a kill, a sweep that was interrupted). A finished run is never redone; an
  unfinished one is never restarted over: `resume=true` continues it (a sweep's job does so by
  itself), anything else is refused with the way out;
- a refused run leaves the folder as it found it: Hydra's own `.hydra/` bookkeeping is written by
  us (conf/hydra/default.yaml sets `hydra.output_subdir: null`) once the run is admitted and its
  settings and data have passed every check, and the log file opens at the first log line.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from pasta_cli.errors import PastaError
from pasta_cli.files import write_atomic
from pasta_cli.run_folder import ADAPTER, CHECKPOINT, CONFIG, METRICS, RESULTS

log = logging.getLogger("pasta")
RUN_FILES = (CONFIG, METRICS, Path(CHECKPOINT).parts[0], ADAPTER, RESULTS)  # what makes a folder a run's
HYDRA_FILES = ".hydra"


@dataclass
class Admission:
    action: str          # start | resume | skip
    message: str = ""    # why (skip, or a resume the user did not ask for)


def admit(run_dir: Path, resume: bool, multirun: bool) -> Admission:
    """What a run may do in `run_dir`, from what the folder holds; a PastaError if it may not start."""
    if (run_dir / RESULTS).exists():
        if multirun:
            return Admission("skip", f"{run_dir} already holds a finished run: skipping it")
        if resume:
            return Admission("skip", f"{run_dir} already holds a finished run ({RESULTS}), so resume=true has nothing "
                             "to continue and nothing was trained; a finished run is never trained further: to train "
                             "longer (a larger trainer.max_steps or trainer.epochs), start a new run in a new "
                             "hydra.run.dir")
        raise PastaError(f"{run_dir} already holds a finished run ({RESULTS}): choose a new hydra.run.dir, "
                         "or resume=true to keep it")
    started = [name for name in RUN_FILES if (run_dir / name).exists()]
    checkpoint = run_dir / CHECKPOINT
    if not started:
        if resume and not multirun:
            raise PastaError(f"resume=true but {run_dir} holds no run to resume: set hydra.run.dir to the folder "
                             "of the run to continue, or drop resume=true to start a new one")
        return Admission("start")
    if resume or multirun:
        if checkpoint.is_file():
            return Admission("resume", "" if resume else f"{run_dir} holds an interrupted job of this sweep: "
                             "resuming it from its checkpoint")
        return Admission("start", f"{run_dir} holds an unfinished run without a checkpoint "
                         f"({', '.join(started)}): starting it again from step 0")
    holds = f"a checkpoint ({CHECKPOINT})" if checkpoint.is_file() else f"no checkpoint yet ({', '.join(started)})"
    raise PastaError(f"{run_dir} holds an unfinished run with {holds}: resume=true to continue it, "
                     "or choose a new hydra.run.dir")


PROBE_GRACE_S = 1.0  # how long a job waits out a lock before calling the folder another run's (is_running's probe)


class FolderLock:
    """An exclusive flock on the run folder for as long as the job runs (rank 0 only)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.fd = os.open(self.run_dir, os.O_RDONLY)
        # a report's is_running() holds the lock for microseconds: only a lock still held after the grace is a run
        deadline = time.monotonic() + PROBE_GRACE_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(self.fd)
                self.fd = None
                raise PastaError(f"another pasta-train process is running in {self.run_dir}: wait for it to end, "
                                 "or choose a new hydra.run.dir") from None

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


def is_empty(run_dir: Path) -> bool:
    return run_dir.is_dir() and not any(run_dir.iterdir())


def discard(run_dir: Path) -> None:
    """Remove the folder Hydra created for a run that was refused before it wrote anything."""
    if is_empty(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Temporary files a killed process (kill -9, power loss) left mid-write: the atomic writer's
    `.<name>.*.tmp` and the adapter's `.adapter.*` folder. Called under the lock, so nobody is writing them."""
    found = [p for p in run_dir.rglob(".*") if (p.is_file() and p.name.endswith(".tmp"))
             or (p.is_dir() and p.name.startswith(".adapter."))]
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def write_hydra_files(run_dir: Path, hydra_cfg, task_cfg, step: int | None) -> Path:
    """Hydra's bookkeeping (config.yaml as composed, hydra.yaml, overrides.yaml), for an admitted run.

    A resumed run keeps the first start's files and adds its own under `.hydra/resume_step<N>/`.
    """
    folder = run_dir / HYDRA_FILES
    if step is not None and (folder / "overrides.yaml").exists():
        folder = folder / f"resume_step{step}"
    write_atomic(folder / "config.yaml", OmegaConf.to_yaml(task_cfg))
    write_atomic(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
    write_atomic(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))
    return folder

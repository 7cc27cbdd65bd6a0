"""Checkpoints: the trainable tensors, optimiser, schedule, loss scaler, RNG states and TrainState,
in one file written atomically, so that `resume=true` continues exactly where a run stopped, and
the settings that shaped training (pasta_cli.training.resume), so that it continues nothing else."""

from __future__ import annotations

import logging
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pasta_cli.errors import PastaError
from pasta_cli.files import write_atomic
from pasta_cli.modeling import load_trainable, trainable_tensors
from pasta_cli.run_folder import CHECKPOINT as CHECKPOINT  # training/ and tests name it checkpoint.CHECKPOINT
from pasta_cli.training import resume
from pasta_cli.training.state import TrainState

log = logging.getLogger("pasta")


def trainable_state(model) -> dict[str, torch.Tensor]:
    """A copy of every trainable tensor (the best model, a checkpoint): kilobytes for PASTA."""
    return {n: t.clone() for n, t in trainable_tensors(model).items()}


def _rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_states(rng: dict) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save(path: Path, run, state: TrainState, settings: dict) -> None:
    """Rank 0 writes; a crash mid-write leaves the previous checkpoint intact."""
    checkpoint = {
        "settings": settings, "state": asdict(state), "trainable": trainable_state(run.model),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler else None, "rng": _rng_states(),
    }
    write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))


def _load(path: Path, mmap: bool = False) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: name it, in one line
        raise PastaError(f"cannot read checkpoint '{path}' ({type(e).__name__}: {str(e).splitlines()[0][:200]}): "
                         "it is damaged or not a pasta-cli checkpoint; start a new run") from None


def peek(path: Path) -> dict:
    """The checkpoint's settings and state without reading its tensors (memory-mapped): for the checks
    a resume must pass before a model loads."""
    ckpt = _load(path, mmap=True)
    return {"settings": ckpt.get("settings"), "state": ckpt["state"]}


def restore(path: Path, run, settings: dict) -> TrainState:
    """The run's state from its checkpoint, with model, optimiser, schedule and RNG put back; the allowed
    setting changes are recorded in the state's `resumes`."""
    ckpt = _load(path)
    changed = resume.changes(ckpt.get("settings"), settings, f"checkpoint '{path}'")
    load_trainable(run.model, ckpt["trainable"], f"checkpoint '{path}'")
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler and ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_states(ckpt["rng"])
    state = TrainState(**ckpt["state"])
    state.resumes.append({"step": state.step, "changed": changed})
    log.info("resumed from %s at step %d (epoch %d, batch %d)%s", path, state.step, state.epoch, state.batch,
             "".join(f"; {k}: {a} -> {b}" for k, (a, b) in changed.items()))
    return state

"""Checkpoints: the trainable tensors, optimiser, schedule, loss scaler, RNG states and TrainState,
in one file written atomically, so that `resume=true` continues exactly where a run stopped."""

from __future__ import annotations

import logging
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pasta_cli.files import write_atomic
from pasta_cli.modeling import load_trainable, trainable_tensors
from pasta_cli.training.state import TrainState

log = logging.getLogger("pasta")
CHECKPOINT = "checkpoints/last.pt"


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


def save(path: Path, run, state: TrainState) -> None:
    """Rank 0 writes; a crash mid-write leaves the previous checkpoint intact."""
    checkpoint = {
        "state": asdict(state), "trainable": trainable_state(run.model),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler else None, "rng": _rng_states(),
    }
    write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))


def restore(path: Path, run) -> TrainState | None:
    """The run's state from its checkpoint, with model, optimiser, schedule and RNG put back; None if absent."""
    if not path.is_file():
        log.warning("resume=true but %s does not exist: starting from the beginning", path)
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    load_trainable(run.model, ckpt["trainable"], f"checkpoint '{path}'")
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler and ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_states(ckpt["rng"])
    state = TrainState(**ckpt["state"])
    log.info("resumed from %s at step %d (epoch %d, batch %d)", path, state.step, state.epoch, state.batch)
    return state

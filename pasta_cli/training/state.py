"""Where a training run stands: the one object a checkpoint saves and a resume restores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class TrainState:
    epoch: int = 0                  # epochs completed
    batch: int = 0                  # global batches of the current epoch already trained on
    step: int = 0                   # optimiser steps taken
    evals: int = 0
    bad_evals: int = 0              # evaluations in a row without a better main score (early stopping)
    wall: float = 0.0               # training seconds so far, across resumes
    best: float | None = None       # the best main score, and where it was reached
    best_epoch: int | None = None
    best_step: int | None = None
    best_scores: dict | None = None
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # its trainable tensors
    history: list[dict] = field(default_factory=list, repr=False)                  # every metrics.jsonl record
    resumes: list[dict] = field(default_factory=list)  # each resume: its step and the settings it changed
    saved_step: int | None = None   # the step of the last checkpoint
    stopped: dict | None = None     # {step, reason}: a non-finite loss or output stopped the run there

    def improved_by(self, score: float) -> bool:
        """A better main score; a NaN (an undefined metric) never is one."""
        return math.isfinite(score) and (self.best is None or score > self.best)

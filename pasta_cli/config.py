"""Hydra/OmegaConf glue: resolvers the configs use, config checks, and composing outside the CLI."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pasta_cli.errors import PastaError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PRECISIONS = ("fp32", "bf16", "fp16")
STAMP_ENV = "PASTA_RUN_STAMP"


def _first(*values):
    """${first:a,b}: the first value that is set (a method's own lr, else the task's)."""
    return next((v for v in values if v is not None), None)


def run_stamp() -> str:
    """The run folder's time stamp. Under torchrun every rank must get the same one, whatever its
    clock says, so the launcher's rank 0 decides it and passes it through PASTA_RUN_STAMP."""
    stamp = os.environ.get(STAMP_ENV)
    if not stamp:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")[:-3]
        os.environ[STAMP_ENV] = stamp  # multirun jobs of one sweep share it too
    return stamp


def register_resolvers() -> None:
    for name, fn in (("first", _first), ("run_stamp", run_stamp)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def compose(overrides: list[str] | None = None) -> DictConfig:
    """The config `pasta-train <overrides>` would run with (for tests, scripts and notebooks)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides or []), return_hydra_config=False)


def check_config(cfg: DictConfig, cuda_available: bool) -> None:
    """Refuse settings that cannot work, before any data or model is loaded."""
    from pasta_cli.methods import check_method

    check_method(cfg.method)
    t = cfg.trainer
    if t.precision not in PRECISIONS:
        raise PastaError(f"unknown trainer.precision '{t.precision}': choose one of {', '.join(PRECISIONS)}")
    if t.device not in ("auto", "cpu", "cuda"):
        raise PastaError(f"unknown trainer.device '{t.device}': choose auto, cpu or cuda")
    if not cuda_available:
        if t.device == "cuda":
            raise PastaError("trainer.device=cuda but no CUDA GPU is visible: use trainer.device=auto or cpu")
        if t.precision == "fp16":
            raise PastaError("trainer.precision=fp16 needs a CUDA GPU: use fp32 (or bf16) on CPU")
        if t.compile:
            raise PastaError("trainer.compile=true is for CUDA runs: use trainer.compile=false on CPU")
    for key in ("batch_size", "grad_accum", "epochs"):
        value = t[key]
        if not isinstance(value, int) or value < 1:
            raise PastaError(f"trainer.{key} must be a positive integer, got {value!r}")
    if t.max_steps is not None and (not isinstance(t.max_steps, int) or t.max_steps < 1):
        raise PastaError(f"trainer.max_steps must be a positive integer or null, got {t.max_steps!r}")
    if not isinstance(cfg.optim.lr, (int, float)) or cfg.optim.lr <= 0:
        raise PastaError(f"optim.lr must be a positive number, got {cfg.optim.lr!r}")
    metrics = list(cfg.task.metrics)
    if t.main_metric not in metrics:
        raise PastaError(f"trainer.main_metric '{t.main_metric}' is not a metric of task {cfg.task.name}: "
                         f"choose one of {', '.join(metrics)}")

"""The runner's typed config: the schema Hydra checks every composed config against, the
resolvers the YAML files use, the config checks that need code, and `compose()` for tests,
scripts and notebooks.

The schema is stored in Hydra's ConfigStore as `pasta_train_schema` and is the first entry of
conf/train.yaml's defaults list, so every task YAML (the shipped ones, or a user's own passed with
`--config-dir`) is checked against `TaskSpec` when the config is composed: a misspelt key or a
value of the wrong type stops the run before anything loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pasta_cli import paper
from pasta_cli.data import TaskSpec, as_spec
from pasta_cli.errors import PastaError
from pasta_cli.methods import check_method

CONF_MODULE = "pasta_cli.conf"  # conf/ of the repository, shipped in the wheel as this package
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
STAMP_ENV = "PASTA_RUN_STAMP"


@dataclass
class ModelConfig:
    tag: str = MISSING                # short name in run folders and tables (minilm, bert-large, ...)
    name_or_path: str = MISSING       # hub id, local folder, or `minilm` (the packaged wheel)
    dropout: float | None = None   # backbone hidden/attention dropout; null keeps the pretrained config's


@dataclass
class OptimConfig:
    lr: float = MISSING
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0


@dataclass
class TrainerConfig:
    epochs: int = MISSING
    max_steps: int | None = None
    batch_size: int = MISSING         # per device; effective = batch_size x devices x grad_accum
    eval_batch_size: int = 64
    grad_accum: int = 1
    max_length: int = 128
    precision: str = "fp32"           # fp32 | bf16 | fp16 (checked by check_config, with the fix in the message)
    device: str = "auto"              # auto | cpu | cuda
    eval_every_steps: int | None = None
    early_stopping_patience: int | None = None
    main_metric: str | None = None  # model selection; null: the task's main metric
    log_every_steps: int = 20
    checkpoint_every_steps: int | None = None
    group_by_length: bool = True
    pad_to_max_length: bool = False
    gradient_checkpointing: bool = False
    compile: bool = False
    num_workers: int = 0
    progress: bool = True


@dataclass
class TrainConfig:
    task: TaskSpec = MISSING
    model: ModelConfig = MISSING
    method: Any = MISSING             # each method has its own keys (conf/method/*.yaml)
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: Any = MISSING
    scale: Any = None                 # pasta-reproduce's budgets (conf/scale/*.yaml), when a scale is chosen
    seed: int = 42
    resume: bool = False


ConfigStore.instance().store(name="pasta_train_schema", node=TrainConfig)


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


for _name, _fn in (("first", _first), ("run_stamp", run_stamp), ("paper", paper.value)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def compose(overrides: list[str] | None = None, config_dir: str | None = None) -> DictConfig:
    """The config `pasta-train <overrides>` would run with; `config_dir` is `--config-dir`."""
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        if config_dir:
            overrides = [f"hydra.searchpath=[file://{os.path.abspath(config_dir)}]", *(overrides or [])]
        return hydra_compose(config_name="train", overrides=list(overrides or []))


def task_spec(cfg: DictConfig) -> TaskSpec:
    """The run's task as a TaskSpec object (enums and all), from the composed config."""
    return as_spec(cfg.task)


def check_config(cfg: DictConfig, cuda_available: bool) -> None:
    """Refuse settings that cannot work, before any data or model is loaded."""
    check_method(cfg.method)
    t = cfg.trainer
    if t.precision not in PRECISIONS:
        raise PastaError(f"unknown trainer.precision '{t.precision}': choose one of {', '.join(PRECISIONS)}")
    if t.device not in DEVICES:
        raise PastaError(f"unknown trainer.device '{t.device}': choose one of {', '.join(DEVICES)}")
    if not cuda_available:
        if t.device == "cuda":
            raise PastaError("trainer.device=cuda but no CUDA GPU is visible: use trainer.device=auto or cpu")
        if t.precision == "fp16":
            raise PastaError("trainer.precision=fp16 needs a CUDA GPU: use fp32 (or bf16) on CPU")
        if t.compile:
            raise PastaError("trainer.compile=true is for CUDA runs: use trainer.compile=false on CPU")
    for key in ("batch_size", "eval_batch_size", "grad_accum", "epochs", "max_length"):
        if t[key] < 1:
            raise PastaError(f"trainer.{key} must be a positive integer, got {t[key]}")
    if t.max_steps is not None and t.max_steps < 1:
        raise PastaError(f"trainer.max_steps must be a positive integer or null, got {t.max_steps}")
    if cfg.optim.lr <= 0:
        raise PastaError(f"optim.lr must be a positive number, got {cfg.optim.lr}")

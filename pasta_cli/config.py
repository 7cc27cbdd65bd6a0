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
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pasta_cli import config_checks, paper_data
from pasta_cli.backbones import VARLEN_ATTENTION
from pasta_cli.data import TaskSpec, as_spec
from pasta_cli.errors import PastaError
from pasta_cli.methods import check_method, get_method, method_configs
from pasta_cli.precision import AMP_DTYPES, MODEL_DTYPES

SELECTIONS = ("dev", "heldout")  # trainer.selection: where the best evaluation is chosen (docs/REPRODUCE.md)
RECIPES = ("own", "pasta")   # recipe=own: each method's own paper's; recipe=pasta: PASTA's budget for all
# what recipe=pasta takes from PASTA's recipe; the lr and the method's own settings stay the method's
# (a learning rate does not carry over: Table 6's 4.5e-3 would wreck full fine-tuning)
SHARED_BUDGET = ("epochs", "batch_size", "weight_decay", "warmup_ratio", "schedule", "max_length", "eps",
                 "eps_before_bias_correction", "max_grad_norm")
CONF_MODULE = "pasta_cli.conf"  # conf/ of the repository, shipped in the wheel as this package
PRECISIONS = tuple(AMP_DTYPES)
DEVICES = ("auto", "cpu", "cuda")
# model.attn_implementation: what transformers' encoders offer, and auto (the runner picks: training/build.py)
ATTENTIONS = ("auto", "sdpa", "eager", *VARLEN_ATTENTION)
SCHEDULES = ("linear", "constant")
STAMP_ENV = "PASTA_RUN_STAMP"


@dataclass
class ModelConfig:
    tag: str = MISSING                # short name in run folders and tables (minilm, bert-large, ...)
    name_or_path: str = MISSING       # hub id, local folder, or `minilm` (the packaged wheel)
    dropout: float | None = None   # backbone hidden/attention dropout; null keeps the pretrained config's
    attn_implementation: str = "auto"  # auto | sdpa | eager | flash_attention_2 (CUDA; what trainer.packing needs)
    dtype: str = "auto"               # fp32 | bf16 | auto (bf16 where fast): the frozen weights' storage (precision.py)


@dataclass
class OptimConfig:
    lr: float = MISSING
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    eps_before_bias_correction: bool = False  # transformers 4.x AdamW's placement (PASTA's authors' optimiser)
    max_grad_norm: float | None = 1.0
    schedule: str = "linear"          # linear | constant (BitFit's code keeps the rate constant), after the warm-up


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
    selection: str = "dev"            # dev | heldout: choose the best evaluation on dev, or on a slice of train
    heldout_fraction: float = 0.1     # selection=heldout: the share of train held out (seeded by `seed`)
    log_every_steps: int = 20
    checkpoint_every_steps: int | None = None
    group_by_length: bool = True
    pad_to_max_length: bool = False
    packing: bool = False             # padding-free training batches (token classification, flash attention)
    gradient_checkpointing: bool = False
    compile: bool = False
    num_workers: int = 0
    progress: bool = True


@dataclass
class TrainConfig:
    task: TaskSpec = MISSING
    model: ModelConfig = MISSING
    method: Any = MISSING             # each method's own typed settings (its home's MethodSettings; ConfigStore)
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: Any = MISSING
    scale: Any = None                 # pasta-reproduce's budgets (conf/scale/*.yaml), when a scale is chosen
    recipe: str = "own"               # own | pasta: whose training recipe (paper.yaml `recipes`) the method uses
    seed: int = 42
    resume: bool = False


ConfigStore.instance().store(name="pasta_train_schema", node=TrainConfig)


def store_method_configs() -> None:
    """Every registered method's settings as the `method` config group's options (`method=lora`), typed:
    `method.r=abc` or a key the settings lack fails when the config is composed. Again in `compose()`, for a
    method registered since (a plugin, a test)."""
    for name, settings in method_configs().items():
        ConfigStore.instance().store(group="method", name=name, node=settings)


store_method_configs()


def time_stamp() -> str:
    """Now, as folder names spell it (milliseconds: two quick runs get two folders)."""
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")[:-3]


def run_stamp() -> str:
    """The run folder's time stamp. Under torchrun every rank must get the same one, whatever its
    clock says, so the launcher's rank 0 decides it and passes it through PASTA_RUN_STAMP."""
    stamp = os.environ.get(STAMP_ENV)
    if not stamp:
        stamp = time_stamp()
        os.environ[STAMP_ENV] = stamp  # multirun jobs of one sweep share it too
    return stamp


_NO_DEFAULT = object()


def recipe_name(cfg) -> str:
    """The paper.yaml recipe whose budget the run trains on: the method's own, or PASTA's (recipe=pasta)."""
    if cfg.recipe not in RECIPES:
        raise PastaError(f"unknown recipe '{cfg.recipe}': choose one of {', '.join(RECIPES)}")
    own = cfg.method.name if cfg.method.name in paper_data.value("recipes") else "pasta"
    return "pasta" if cfg.recipe == "pasta" else own


def recipe_value(key: str, default=_NO_DEFAULT, *, _root_):
    """${recipe:key[,default]}: the run's recipe value for `key` (its method, task and backbone), else the
    default (the task config's budget); under recipe=pasta, SHARED_BUDGET keys come from PASTA's recipe."""
    name = recipe_name(_root_) if key in SHARED_BUDGET else _root_.method.name
    found = paper_data.recipe(name, _root_.task.name, _root_.model.tag).get(key, default)
    if found is _NO_DEFAULT:
        raise PastaError(f"paper.yaml's recipe for {name} has no '{key}' (and the config gives no default)")
    return found


def per_device(processes: int, *, _root_) -> int:
    """${per_device:N}: the recipe's batch (the effective one) split over N processes, pasta-reproduce's
    trainer.batch_size under torchrun; a batch that does not split stays whole on every process."""
    batch = recipe_value("batch_size", _root_.task.batch_size, _root_=_root_)
    return batch // int(processes) if batch % int(processes) == 0 else batch


def sqlite_url(path: str) -> str:
    """${sqlite:PATH}: a SQLite URL for an Optuna study kept in PATH, its folder made now: the sweeper opens the
    study before the launcher makes the sweep folder the file lives in (conf/hparams_search/optuna.yaml)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return f"sqlite:///{os.path.abspath(path)}"


def row_tag(*, _root_) -> str:
    """${row_tag:}: what tells rows of one method apart in a run folder's name: PASTA's variant (RoAd's), LoReFT's
    positions (loreft and loreft_special), else `na`."""
    for key in ("variant", "positions"):
        if key in _root_.method:
            return str(_root_.method[key])
    return "na"


# Our conf/hydra/launcher/submitit_slurm.yaml adds Table 6's GPUs to the plugin's config of the same name;
# Hydra 1.3 merges the two but says the matching is deprecated, on every run. The merge is what we want.
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema with the same name")

for _name, _fn in (("run_stamp", run_stamp), ("paper", paper_data.value), ("recipe", recipe_value),
                   ("per_device", per_device), ("sqlite", sqlite_url), ("row_tag", row_tag)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def compose(overrides: list[str] | None = None, config_dir: str | None = None) -> DictConfig:
    """The config `pasta-train <overrides>` would run with; `config_dir` is `--config-dir`."""
    store_method_configs()
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        if config_dir:
            overrides = [f"hydra.searchpath=[file://{os.path.abspath(config_dir)}]", *(overrides or [])]
        return hydra_compose(config_name="train", overrides=list(overrides or []))


def task_spec(cfg: DictConfig) -> TaskSpec:
    """The run's task as a TaskSpec object (enums and all), from the composed config."""
    return as_spec(cfg.task)


def check_config(cfg: DictConfig, cuda_available: bool) -> None:
    """Refuse settings that cannot work, before any data or model is loaded."""
    recipe_name(cfg)  # first: the budget's values resolve through it
    check_method(cfg.method)  # the method's own settings, in its own words
    config_checks.check_known_keys(cfg, TrainConfig, get_method(cfg.method.get("name")).schema)
    config_checks.check_numbers(cfg)
    t = cfg.trainer
    attention = cfg.model.attn_implementation
    if attention not in ATTENTIONS:
        raise PastaError(f"unknown model.attn_implementation '{attention}': choose one of {', '.join(ATTENTIONS)}")
    if attention in VARLEN_ATTENTION and not cuda_available:
        raise PastaError(f"model.attn_implementation={attention} runs on a CUDA GPU: use auto, sdpa or eager on CPU")
    if t.precision not in PRECISIONS:
        raise PastaError(f"unknown trainer.precision '{t.precision}': choose one of {', '.join(PRECISIONS)}")
    if cfg.model.get("dtype", "auto") not in MODEL_DTYPES:
        raise PastaError(f"unknown model.dtype '{cfg.model.dtype}': choose one of {', '.join(MODEL_DTYPES)}")
    if cfg.model.get("dtype") == "bf16" and t.precision == "fp16":
        raise PastaError("model.dtype=bf16 computes in bf16, trainer.precision=fp16 in fp16: use "
                         "trainer.precision=bf16 (or model.dtype=fp32 for fp16 autocast)")
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
    if t.selection not in SELECTIONS:
        raise PastaError(f"unknown trainer.selection '{t.selection}': choose one of {', '.join(SELECTIONS)}")
    if t.selection == "heldout" and not 0 < t.heldout_fraction < 1:
        raise PastaError(f"trainer.heldout_fraction must be between 0 and 1 (e.g. 0.1), got {t.heldout_fraction}")
    if t.packing:
        check_packing_settings(cfg, cuda_available)
    if cfg.optim.schedule not in SCHEDULES:
        raise PastaError(f"unknown optim.schedule '{cfg.optim.schedule}': choose one of {', '.join(SCHEDULES)}")


def check_packing_settings(cfg: DictConfig, cuda_available: bool) -> None:
    """trainer.packing=true: what the config alone can refuse (the backbone's family is checked when its
    config is read: backbones.check_packing)."""
    kind = str(getattr(cfg.task.kind, "value", cfg.task.kind))
    if kind != "token_classification":
        raise PastaError(f"trainer.packing=true serves token classification only: a {kind} head reads position 0 "
                         "of its row, which in a packed row is the first sequence's [CLS] alone; use "
                         "trainer.packing=false for this task")
    if cfg.trainer.pad_to_max_length:
        raise PastaError("trainer.packing=true and trainer.pad_to_max_length=true contradict each other: packed rows "
                         "have no padding; set one of them to false")
    if not cuda_available:
        raise PastaError("trainer.packing=true needs flash attention, which runs on a CUDA GPU: use "
                         "trainer.packing=false on CPU")
    if cfg.model.attn_implementation not in VARLEN_ATTENTION:
        raise PastaError(f"trainer.packing=true with model.attn_implementation={cfg.model.attn_implementation}: that "
                         "attention lets packed sequences attend to each other; set model.attn_implementation="
                         "flash_attention_2 (pip install flash-attn) or use trainer.packing=false")

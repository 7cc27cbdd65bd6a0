"""Building a run, in named steps (torchtune's recipe style): the device, the data, the model with
its method, the optimiser and schedule. `build` returns them as one `Run`; the loop, the
checkpoints and the benchmark read from it."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from pasta_cli import precision
from pasta_cli.backbones import first_position, load_model, load_tokenizer
from pasta_cli.config import task_spec
from pasta_cli.data import HELDOUT, Collator, TaskData, encode, hold_out, load_task
from pasta_cli.data.encode import PackingCollator
from pasta_cli.methods import Method, apply_method, check_method, get_method
from pasta_cli.modeling import check_gradients_reachable
from pasta_cli.training import dist


@dataclass
class Run:
    cfg: DictConfig
    device: torch.device
    device_type: str                  # cuda | cpu
    world: int                        # processes (torchrun), each with its share of every global batch
    rank: int
    task: TaskData
    tokenizer: Any
    data: dict                        # split -> tokenized datasets.Dataset
    collate: Collator                 # padded batches: evaluation and prediction (one row per input)
    train_collate: Any                # training batches: `collate`, or the PackingCollator (trainer.packing)
    method: Method
    model: nn.Module                  # the model the method made (a PeftModel for LoRA)
    module: nn.Module                 # what forward/backward runs through: the model, DDP- and compile-wrapped
    params: list[nn.Parameter]        # the trainable parameters
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None     # the forward's autocast (precision.compute_dtype); None: fp32
    frozen_dtype: str                 # the frozen weights' storage: fp32 | bf16 (model.dtype as resolved)
    train_rows: list[dict]
    lengths: list[int]                # tokens per training row (length-grouped batches)
    global_batch: int                 # trainer.batch_size x world
    total_steps: int
    main_metric: str                  # model selection: trainer.main_metric, else the task's

    @property
    def selection_splits(self) -> list[str]:
        """Where the best evaluation is chosen during training: the task's dev splits, or the held-out slice."""
        return [HELDOUT] if self.cfg.trainer.selection == "heldout" else self.task.eval_splits

    @property
    def head(self) -> str:
        return self.task.kind   # task kinds are the head names backbones.load_model takes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_type_of(cfg) -> str:
    """cuda where a GPU is visible and trainer.device allows it, else cpu."""
    return "cuda" if torch.cuda.is_available() and cfg.trainer.device != "cpu" else "cpu"


def frozen_storage(cfg, device_type: str) -> str:
    """model.dtype as this run stores its frozen weights: `auto` resolved for the device (precision.resolve);
    fp32 for a method whose frozen weights must stay fp32 (Method.low_precision_frozen: full FT, Diff-Prune)."""
    if not get_method(cfg.method.name).low_precision_frozen:
        return "fp32"
    stored = precision.resolve(cfg.model.get("dtype", "auto"), device_type)
    # fp16 autocast over bf16 weights would convert every weight at every step: auto keeps fp32 there
    return "fp32" if cfg.trainer.precision == "fp16" else stored


def attention(cfg, device_type: str, stored: str) -> str:
    """model.attn_implementation as loaded: `auto` is sdpa, except eager where a CPU computes in bf16. There, a
    training forward (attention dropout) sends SDPA to its math kernel, which computes bf16 attention in fp32:
    the 12 (batch, heads, length, length) tensors a MiniLM step saves take 270 MB more, and the step 1.36x longer
    (docs/PERFORMANCE.md). Eager attention runs the same ops in bf16 (softmax too: CPU autocast keeps it so)."""
    chosen = cfg.model.get("attn_implementation", "auto")
    if chosen != "auto":
        return chosen
    bf16 = precision.compute_dtype(cfg.trainer.precision, stored) == torch.bfloat16
    return "eager" if device_type == "cpu" and bf16 else "sdpa"


def setup_device(cfg) -> tuple[torch.device, str]:
    """Join torchrun's process group (if any) and pick this process's device."""
    device_type = device_type_of(cfg)
    dist.init(device_type)
    return dist.local_device(device_type), device_type


def setup_data(cfg, task: TaskData):
    """The tokenizer, every split tokenized (no padding), and the collator that pads each batch."""
    tokenizer = load_tokenizer(cfg.model.name_or_path, pretokenized=task.kind == "token_classification")
    data = encode(task, tokenizer, cfg.trainer.max_length)
    return tokenizer, data, Collator(task, tokenizer)


def setup_model(cfg, task: TaskData, tokenizer, device, device_type, stored: str) -> tuple[nn.Module, nn.Module]:
    """The backbone with a fresh head, the method on it, its frozen weights stored as `stored` says, on the
    device; (model, module to run)."""
    model = load_model(cfg.model.name_or_path, task.kind, task.num_labels, task.id2label or None,
                       attn_implementation=attention(cfg, device_type, stored), dropout=cfg.model.dropout)
    model = apply_method(model, tokenizer, cfg.method, task.pair)
    # after the method chose what trains: only what it froze is cast (vectors, head, LoRA's A and B stay fp32)
    precision.store_frozen(model, precision.STORAGE[stored])
    if cfg.trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = model.to(device)
    check_gradients_reachable(model)  # before DDP registers them: one line now, not a hang at step 2
    module = model
    if dist.world_size() > 1:
        # DDP registers only requires_grad parameters: with PASTA a few KB are all-reduced
        module = DistributedDataParallel(model, device_ids=[device.index] if device_type == "cuda" else None)
    if cfg.trainer.compile:
        module = torch.compile(module)
    return model, module


def setup_optimizer(cfg, params, total_steps: int):
    """AdamW with warm-up, then the recipe's schedule (linear decay, or constant), and fp16's loss scaler.
    `params`: the trainable parameters, or the method's groups of them (Diff-Prune's gates have their own lr)."""
    o = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    if o.get("eps_before_bias_correction"):
        legacy_eps(optimizer)
    warmup = int(o.warmup_ratio * total_steps)
    scheduler = (get_constant_schedule_with_warmup(optimizer, warmup) if o.schedule == "constant"  # BitFit's code
                 else get_linear_schedule_with_warmup(optimizer, warmup, total_steps))
    scaler = torch.amp.GradScaler("cuda") if cfg.trainer.precision == "fp16" else None
    return optimizer, scheduler, scaler


def legacy_eps(optimizer: torch.optim.AdamW) -> None:
    """Make torch's AdamW add eps where transformers 4.x's AdamW (PASTA's authors' optimiser) did: to sqrt(v)
    before the bias correction. Its step is lr/bc1 * m / (sqrt(v) + eps) * sqrt(bc2), which is torch's
    lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps') with eps' = eps / sqrt(bc2), bc2 = 1 - beta2^t: so before each step
    every group's eps is set to that (3.2e-5 at step 1 for eps 1e-6, back to 1e-6 as t grows). The base eps is
    kept in the group (`legacy_eps`), so a checkpoint's optimiser state resumes it."""
    for group in optimizer.param_groups:
        group.setdefault("legacy_eps", group["eps"])

    def before_step(opt, args, kwargs):
        for group in opt.param_groups:
            state = next((opt.state[p] for p in group["params"] if p in opt.state), None)
            t = int(state["step"]) + 1 if state else 1  # the step about to be taken (torch counts from 1)
            group["eps"] = group["legacy_eps"] / math.sqrt(1 - group["betas"][1] ** t)

    optimizer.register_step_pre_hook(before_step)


def count_steps(cfg, rows: int, world: int) -> int:
    """Optimiser steps of the whole run: ceil(batches per epoch / grad_accum) x epochs, capped by max_steps."""
    t = cfg.trainer
    batches_per_epoch = math.ceil(rows / (t.batch_size * world))
    total = math.ceil(batches_per_epoch / t.grad_accum) * t.epochs
    return min(total, t.max_steps) if t.max_steps else total


def build(cfg, task: TaskData | None = None) -> Run:
    """Everything a run needs, in the order that keeps a seed's numbers reproducible."""
    method = check_method(cfg.method)
    device, device_type = setup_device(cfg)
    seed_everything(cfg.seed)
    task = task or load_task(task_spec(cfg))
    if cfg.trainer.selection == "heldout":
        task = hold_out(task, cfg.trainer.heldout_fraction, cfg.seed)
    tokenizer, data, collate = setup_data(cfg, task)
    stored = frozen_storage(cfg, device_type)
    model, module = setup_model(cfg, task, tokenizer, device, device_type, stored)
    # packing changes only the training batches' layout; evaluation stays padded, so predictions keep one row
    # per input (the loss is the same: a mean over the same labelled tokens)
    train_collate = PackingCollator(first_position(model.config)) if cfg.trainer.packing else collate
    # a method that trains nothing (the benchmark's floor) still gets the optimiser and schedule of any
    # method: AdamW refuses an empty list, so it holds one empty tensor kept outside the model, where DDP
    # never waits for it (an empty *parameter* never requires grad: modeling.freeze_empty)
    params = [p for p in model.parameters() if p.requires_grad] or [torch.zeros(0, device=device, requires_grad=True)]
    world = dist.world_size()
    lengths = [len(x) for x in data["train"]["input_ids"]]
    total_steps = count_steps(cfg, len(lengths), world)
    optimizer, scheduler, scaler = setup_optimizer(cfg, method.param_groups(model, params), total_steps)
    return Run(cfg=cfg, device=device, device_type=device_type, world=world, rank=dist.rank(), task=task,
               tokenizer=tokenizer, data=data, collate=collate, train_collate=train_collate, method=method,
               model=model, module=module, params=params, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
               amp_dtype=precision.compute_dtype(cfg.trainer.precision, stored), frozen_dtype=stored,
               train_rows=data["train"].to_list(), lengths=lengths,
               global_batch=cfg.trainer.batch_size * world, total_steps=total_steps,
               main_metric=cfg.trainer.main_metric or task.main_metric)

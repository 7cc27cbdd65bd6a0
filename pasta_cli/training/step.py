"""One optimiser step, the unit the training loop repeats and the benchmark times.

`train_step` runs forward and backward over the micro-batches of one step (gradient accumulation;
under DDP only the last one all-reduces), then clips, steps the optimiser and the schedule.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast(run):
    """bf16/fp16 autocast where trainer.precision asks for it, else nothing."""
    if run.amp_dtype is None:
        return nullcontext()
    return torch.autocast(run.device_type, dtype=run.amp_dtype)


def to_device(run, batch: dict) -> dict:
    """A collated batch on the run's device (padded to trainer.max_length when pad_to_max_length asks)."""
    if run.cfg.trainer.pad_to_max_length:
        batch = pad_batch(batch, run.cfg.trainer.max_length, run.tokenizer.pad_token_id)
    # a packed batch also carries plain ints (max_length_q/k, flash attention's longest sequence)
    return {k: v.to(run.device) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_step(run, micro_batches: list[dict]) -> float:
    """One optimiser step over `micro_batches` (collated, on the device); returns their mean loss."""
    accum = run.cfg.trainer.grad_accum
    losses = []
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = nullcontext() if last or run.world == 1 else run.module.no_sync()
        with sync, autocast(run):
            loss = run.module(**batch).loss / accum  # / accum even for a short last group, as before
        (run.scaler.scale(loss) if run.scaler else loss).backward()
        losses.append(loss.item() * accum)
    if run.scaler:
        run.scaler.unscale_(run.optimizer)
    if run.cfg.optim.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(run.params, run.cfg.optim.max_grad_norm)
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return sum(losses) / len(losses)


def pad_batch(batch: dict, length: int, pad_id: int) -> dict:
    """Pad every sequence tensor of a collated batch to `length` (the official code's fixed padding)."""
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1, "labels": -100}
    out = {}
    for k, v in batch.items():
        if v.dim() == 2 and v.shape[1] < length and k in fill:
            v = torch.nn.functional.pad(v, (0, length - v.shape[1]), value=fill[k])
        out[k] = v
    return out

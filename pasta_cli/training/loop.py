"""The training loop: global batches split over ranks, one `train_step` per optimiser step,
evaluation with keep-best and early stopping, checkpoints, and the run folder at the end.

A small loop of our own rather than HF Trainer: checkpoints and the best model hold only the trainable
tensors (kilobytes for PASTA, where Trainer saves the whole model at every save, the official code's
mistake), and data order, RNG and best-so-far are restored exactly on resume.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.trainer_pt_utils import get_length_grouped_indices

from pasta_cli.eval import compute_metrics, predictions
from pasta_cli.modeling import load_trainable
from pasta_cli.training import artifacts, checkpoint, dist, resume
from pasta_cli.training.build import Run, build
from pasta_cli.training.loggers import make_logger
from pasta_cli.training.state import TrainState
from pasta_cli.training.step import autocast, to_device, train_step

log = logging.getLogger("pasta")


def epoch_batches(lengths, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """Global batches of one epoch, the same on every rank and after a resume (seeded by seed+epoch).

    With group_by_length, batches hold examples of similar length (HF's mega-batch grouping), so
    dynamic padding pads little; otherwise a plain random permutation.
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    if group_by_length:
        order = get_length_grouped_indices(lengths, batch_size, generator=g)
    else:
        order = torch.randperm(len(lengths), generator=g).tolist()
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def rank_slice(batch: list[int], rank: int, world: int) -> list[int]:
    """This rank's share of a global batch (every rank gets at least one row)."""
    share = batch[rank::world]
    return share or batch[-1:]


@torch.no_grad()
def predict(run: Run, split: str):
    """(logits, labels) for a split, in dataset order; run on one process."""
    run.model.eval()
    loader = DataLoader(run.data[split], batch_size=run.cfg.trainer.eval_batch_size, collate_fn=run.collate)
    logits, labels = [], []
    for batch in loader:
        batch = to_device(run, batch)
        y = batch.pop("labels", None)
        with autocast(run):
            logits.append(run.model(**batch).logits.float().cpu().numpy())
        if y is not None:
            labels.append(y.cpu().numpy())
    run.model.train()
    if run.task.kind == "token_classification":  # pad the token dimension to a common width
        width = max(x.shape[1] for x in logits)
        logits = [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0))) for x in logits]
        labels = [np.pad(y, ((0, 0), (0, width - y.shape[1])), constant_values=-100) for y in labels]
    return np.concatenate(logits), (np.concatenate(labels) if labels else None)


def evaluate(run: Run, splits: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Scores on `splits`, by default those the best evaluation is chosen on (`run.selection_splits`)."""
    scores = {}
    for split in run.selection_splits if splits is None else splits:
        logits, labels = predict(run, split)
        scores[split] = compute_metrics(run.task, predictions(run.task, logits), labels)
    return scores


def eval_and_keep_best(run: Run, state: TrainState, train_loss: float, run_dir: Path, logger) -> bool:
    """Evaluate on rank 0 and keep the best trainable tensors and adapter; True to stop early."""
    main = dist.is_main()
    state.evals += 1
    if main:
        scores = evaluate(run)
        score = scores[run.selection_splits[0]][run.main_metric]
        record = {"step": state.step, "epoch": state.epoch, "train_loss": train_loss,
                  "lr": run.scheduler.get_last_lr()[0], "wall_s": round(state.wall, 2),
                  **{f"{split}/{k}": v for split, s in scores.items() for k, v in s.items()}}
        state.history.append(record)
        artifacts.write_metrics(run_dir, state.history)
        logger.log({f"eval/{k}": v for k, v in record.items() if "/" in k}, state.step)
        if state.improved_by(score):
            state.best, state.best_epoch, state.best_step, state.best_scores = score, state.epoch, state.step, scores
            state.best_state, state.bad_evals = checkpoint.trainable_state(run.model), 0
            artifacts.save_best(run, run_dir)
        else:
            state.bad_evals += 1
        figure = artifacts.draw(run, run_dir, state.step)
        if figure:
            logger.image(figure.stem, figure, state.step)
    patience = run.cfg.trainer.early_stopping_patience
    stop = bool(main and patience and state.bad_evals >= patience)
    # every rank learns the decision (needed for the same final numbers)
    stop = dist.broadcast(stop)
    dist.barrier()
    return stop


def fit(run: Run, run_dir: Path, logger) -> TrainState:
    t, cfg = run.cfg.trainer, run.cfg
    ckpt = run_dir / checkpoint.CHECKPOINT
    settings = resume.settings(cfg, run.task, run.world)
    state = checkpoint.restore(ckpt, run, settings) if cfg.resume and ckpt.is_file() else TrainState()
    if dist.is_main():  # exactly the evaluations the checkpoint knows (none for a fresh start)
        artifacts.write_metrics(run_dir, state.history)
    started = time.time() - state.wall
    run.model.train()
    stop = state.step >= run.total_steps
    loss_sum, loss_n = 0.0, 0
    bar = tqdm(total=run.total_steps, initial=state.step, desc="train", disable=not (dist.is_main() and t.progress),
               dynamic_ncols=True)
    while not stop and state.epoch < t.epochs:
        batches = epoch_batches(run.lengths, run.global_batch, cfg.seed, state.epoch, t.group_by_length)
        while not stop and state.batch < len(batches):
            group = batches[state.batch:state.batch + t.grad_accum]
            micro = [to_device(run, run.train_collate([run.train_rows[i] for i in rank_slice(b, run.rank, run.world)]))
                     for b in group]
            loss = train_step(run, micro)
            run.method.after_step(run.model, state.step + 1, run.total_steps, run.scheduler)  # Diff-Prune's projection
            loss_sum, loss_n = loss_sum + loss * len(micro), loss_n + len(micro)
            state.batch += len(group)
            state.step += 1
            bar.update(1)
            if dist.is_main() and state.step % t.log_every_steps == 0:
                logger.log({"train/loss": loss_sum / loss_n, "train/lr": run.scheduler.get_last_lr()[0],
                            "train/epoch": state.epoch + state.batch / len(batches)}, state.step)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
            stop = state.step >= run.total_steps
            end_of_epoch = state.batch == len(batches)
            if end_of_epoch:
                state.epoch, state.batch = state.epoch + 1, 0
            eval_now = (t.eval_every_steps and state.step % t.eval_every_steps == 0) or \
                (not t.eval_every_steps and end_of_epoch) or stop
            if eval_now:
                state.wall = time.time() - started
                train_loss = dist.mean(loss_sum / max(loss_n, 1), run.device)
                stop = eval_and_keep_best(run, state, train_loss, run_dir, logger) or stop
                loss_sum, loss_n = 0.0, 0
            every = t.checkpoint_every_steps
            if dist.is_main() and ((every and state.step % every == 0) or (not every and eval_now)):
                state.wall = time.time() - started
                checkpoint.save(ckpt, run, state, settings)
            if end_of_epoch:
                break
    bar.close()
    state.wall = time.time() - started
    if state.evals == 0:  # no evaluation happened yet (e.g. a resumed run that had finished training)
        eval_and_keep_best(run, state, float("nan"), run_dir, logger)
    return state


def finish(run: Run, state: TrainState, run_dir: Path, logger) -> dict:
    """Restore the best tensors, write predictions, the figure and results.json; returns the results."""
    if not dist.is_main():
        return {}
    load_trainable(run.model, state.best_state, "the best model's tensors")
    final = None
    if run.cfg.trainer.selection == "heldout":  # dev, read for the first time: the chosen model, once
        final = evaluate(run, run.task.eval_splits)
        logger.log({f"final/{split}/{k}": v for split, s in final.items() for k, v in s.items()}, state.step)
    artifacts.write_predictions(run, run_dir, lambda split: predict(run, split))
    figure = artifacts.draw(run, run_dir, state.best_step, " (best)")
    if figure:
        logger.image(f"{figure.stem}_best", figure)
    record = artifacts.results(run, state, final)
    artifacts.write_results(run_dir, record)
    logger.summary({k: v for k, v in record.items() if not isinstance(v, dict)})
    return record


def train(cfg, run_dir, task=None) -> dict:
    """Run one training job end to end in `run_dir`; returns results.json's content (rank 0)."""
    run_dir = Path(run_dir)
    run = build(cfg, task)
    logger = make_logger(cfg, OmegaConf.to_container(cfg, resolve=True), run_dir, dist.is_main())
    try:
        state = fit(run, run_dir, logger)
        return finish(run, state, run_dir, logger)
    finally:
        logger.finish()

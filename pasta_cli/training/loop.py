"""The training loop: global batches split over ranks, one `train_step` per optimiser step,
evaluation with keep-best and early stopping, checkpoints, and the run folder at the end.

A small loop of our own rather than HF Trainer: checkpoints and the best model hold only the trainable
tensors (kilobytes for PASTA, where Trainer saves the whole model at every save, the official code's
mistake), and data order, RNG and best-so-far are restored exactly on resume.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.trainer_pt_utils import get_length_grouped_indices

from pasta_cli.errors import PastaError
from pasta_cli.eval import compute_metrics, predictions
from pasta_cli.modeling import load_trainable, trainable_tensors
from pasta_cli.training import artifacts, checkpoint, dist, resume
from pasta_cli.training.build import Run, build
from pasta_cli.training.loggers import make_logger
from pasta_cli.training.model_card import write_card
from pasta_cli.training.state import TrainState
from pasta_cli.training.step import autocast, to_device, train_step

log = logging.getLogger("pasta")
progress = logging.getLogger("pasta.progress")  # train.log's progress lines (train.job_log), not the console's


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


class Diverged(PastaError):
    """The loss or the model's outputs became NaN or infinite: the run stopped there (exit 1; its record says why)."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, with the step reached (pasta-train prints it in one line, exit 130)."""


def evaluate(run: Run, splits: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Scores on `splits`, by default those the best evaluation is chosen on (`run.selection_splits`). A model
    whose outputs are not finite is broken, not scored: a Diverged error names the split."""
    scores = {}
    for split in run.selection_splits if splits is None else splits:
        logits, labels = predict(run, split)
        if not np.isfinite(logits).all():
            raise Diverged(f"the model's outputs on {split} are not finite numbers")
        scores[split] = compute_metrics(run.task, predictions(run.task, logits), labels)
    return scores


def eval_and_keep_best(run: Run, state: TrainState, train_loss: float, run_dir: Path, logger) -> bool:
    """Evaluate on rank 0 and keep the best trainable tensors and adapter; True to stop early. A broken model
    (outputs not finite) sets state.stopped on every rank and keeps nothing of it."""
    main = dist.is_main()
    state.evals += 1
    broken = None
    if main:
        try:
            scores = evaluate(run)
        except Diverged as e:
            broken = str(e)
        else:
            keep_best(run, state, scores, train_loss, run_dir, logger)
    patience = run.cfg.trainer.early_stopping_patience
    stop = bool(main and patience and state.bad_evals >= patience)
    # every rank learns the decisions (needed for the same final numbers)
    stop, broken = dist.broadcast((stop, broken))
    dist.barrier()
    if broken:
        halt(state, f"{broken} at step {state.step}")
    return stop or bool(broken)


def keep_best(run: Run, state: TrainState, scores: dict, train_loss: float, run_dir: Path, logger) -> None:
    """Record an evaluation in metrics.jsonl (a non-finite number as null) and keep the model if it is the best."""
    score = scores[run.selection_splits[0]][run.main_metric]
    record = {"step": state.step, "epoch": state.epoch, "train_loss": train_loss,
              "lr": run.scheduler.get_last_lr()[0], "wall_s": round(state.wall, 2),
              **{f"{split}/{k}": v for split, s in scores.items() for k, v in s.items()}}
    state.history.append({k: finite_or_none(v) for k, v in record.items()})
    artifacts.write_metrics(run_dir, state.history)
    logger.log({f"eval/{k}": v for k, v in state.history[-1].items() if k != "step"}, state.step)  # = metrics.jsonl
    progress.info("step %d: %s", state.step, "  ".join(f"{k}={v:.4f}" for k, v in record.items() if "/" in k))
    if state.improved_by(score):
        state.best, state.best_epoch, state.best_step, state.best_scores = score, state.epoch, state.step, scores
        state.best_state, state.bad_evals = checkpoint.trainable_state(run.model), 0
        artifacts.save_best(run, run_dir)
    else:
        state.bad_evals += 1
    figure = artifacts.draw(run, run_dir, state.step)
    if figure:
        logger.image(figure.stem, figure, state.step)


def finite_or_none(value):
    """A float that JSON can hold: NaN and infinities become null (never a score)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def halt(state: TrainState, what: str) -> None:
    """Stop the run at a non-finite loss or output: record why (results.json's `stopped`); nothing of it is kept."""
    where = f"checkpoints/last.pt (step {state.saved_step})" if state.saved_step is not None else "no checkpoint"
    best = f"adapter/ (the best model, step {state.best_step})" if state.best_step is not None else "no adapter"
    state.stopped = {"step": state.step, "reason": f"{what}: the run stopped there, keeping {where} and {best} "
                     "from before; lower optim.lr (or check the data) and start a new run (a new hydra.run.dir)"}
    log.error(state.stopped["reason"])


def fit(run: Run, run_dir: Path, logger) -> TrainState:
    t, cfg = run.cfg.trainer, run.cfg
    ckpt = run_dir / checkpoint.CHECKPOINT
    settings = resume.settings(cfg, run.task, run.world)
    state = checkpoint.restore(ckpt, run, settings) if cfg.resume and ckpt.is_file() else TrainState()
    state.saved_step = state.step if state.step else None
    if dist.is_main():  # exactly the evaluations the checkpoint knows (none for a fresh start)
        artifacts.write_metrics(run_dir, state.history)
    started = time.time() - state.wall
    run.model.train()
    bar = tqdm(total=run.total_steps, initial=state.step, desc="train", disable=not (dist.is_main() and t.progress),
               dynamic_ncols=True)
    try:
        while state.step < run.total_steps and state.epoch < t.epochs and not state.stopped:
            if train_epoch(run, state, run_dir, logger, bar, lambda: time.time() - started):
                break
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted at step {state.step} (last checkpoint: step {state.saved_step or 0}); "
                          f"resume=true hydra.run.dir={run_dir} to continue") from None
    finally:
        bar.close()
    state.wall = time.time() - started
    if state.evals == 0 and not state.stopped:  # no evaluation yet (e.g. a resumed run that had finished training)
        eval_and_keep_best(run, state, float("nan"), run_dir, logger)
    return state


def train_epoch(run: Run, state: TrainState, run_dir: Path, logger, bar, clock) -> bool:
    """Train the rest of the current epoch; True to stop the run (done, early stopping, or a non-finite loss)."""
    t, cfg = run.cfg.trainer, run.cfg
    settings = resume.settings(cfg, run.task, run.world)
    batches = epoch_batches(run.lengths, run.global_batch, cfg.seed, state.epoch, t.group_by_length)
    loss_sum, loss_n = 0.0, 0
    while state.batch < len(batches):
        group = batches[state.batch:state.batch + t.grad_accum]
        micro = [to_device(run, run.train_collate([run.train_rows[i] for i in rank_slice(b, run.rank, run.world)]))
                 for b in group]
        loss = train_step(run, micro)
        state.batch += len(group)
        state.step += 1
        if not math.isfinite(dist.mean(loss, run.device) if run.world > 1 else loss):  # every rank stops
            halt(state, f"the training loss became {loss} at step {state.step}")
            return True
        run.method.after_step(run.model, state.step, run.total_steps, run.scheduler)  # Diff-Prune's projection
        loss_sum, loss_n = loss_sum + loss * len(micro), loss_n + len(micro)
        bar.update(1)
        if dist.is_main() and state.step % t.log_every_steps == 0:
            lr, epoch = run.scheduler.get_last_lr()[0], state.epoch + state.batch / len(batches)
            logger.log({"train/loss": loss_sum / loss_n, "train/lr": lr, "train/epoch": epoch}, state.step)
            bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
            progress.info("step %d/%d: loss %.4f, lr %.3g, epoch %.2f", state.step, run.total_steps,
                          loss_sum / loss_n, lr, epoch)
        stop = state.step >= run.total_steps
        end_of_epoch = state.batch == len(batches)
        if end_of_epoch:
            state.epoch, state.batch = state.epoch + 1, 0
        eval_now = (t.eval_every_steps and state.step % t.eval_every_steps == 0) or \
            (not t.eval_every_steps and end_of_epoch) or stop
        if eval_now:
            state.wall = clock()
            stop = eval_and_keep_best(run, state, dist.mean(loss_sum / max(loss_n, 1), run.device), run_dir,
                                      logger) or stop
            loss_sum, loss_n = 0.0, 0
        every = t.checkpoint_every_steps
        if not state.stopped and ((every and state.step % every == 0) or (not every and eval_now)):
            state.wall = clock()
            save_checkpoint(run, state, run_dir / checkpoint.CHECKPOINT, settings)
        if stop or state.stopped:
            return True
        if end_of_epoch:
            return False
    return False


def save_checkpoint(run: Run, state: TrainState, path: Path, settings: dict) -> None:
    """A checkpoint (rank 0) of a model whose trainable tensors are all finite; else the run stops, keeping the
    last one. Every rank checks (DDP keeps their tensors equal), so every rank stops together."""
    bad = [n for n, p in trainable_tensors(run.model).items() if not torch.isfinite(p).all()]
    if bad:
        halt(state, f"trainable tensor {bad[0]} holds non-finite numbers at step {state.step}")
        return
    state.saved_step = state.step
    if dist.is_main():
        checkpoint.save(path, run, state, settings)


def finish(run: Run, state: TrainState, run_dir: Path, logger) -> dict:
    """Restore the best tensors, write predictions, the figure and results.json; returns the results."""
    if not dist.is_main():
        return {}
    if state.best_state is None:  # stopped before any good evaluation: nothing to predict with, no score
        record = artifacts.results(run, state)
        artifacts.write_results(run_dir, record)
        return record
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
    write_card(run_dir / artifacts.ADAPTER, run.cfg, record)  # adapter/README.md, the Hub's model card
    artifacts.write_results(run_dir, record)  # last: the run is finished
    logger.summary(record)
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

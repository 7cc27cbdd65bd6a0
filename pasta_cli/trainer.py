"""The training loop: AdamW + linear schedule, dynamic padding, AMP, DDP, eval/keep-best, checkpoints.

A small loop of our own rather than HF Trainer: checkpoints and the best model hold only the trainable
tensors (kilobytes for PASTA, where Trainer saves the whole model at every save, the official code's
mistake), and data order, RNG and best-so-far are restored exactly on resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from pasta_cli import dist, report
from pasta_cli.errors import PastaError

log = logging.getLogger("pasta")
CHECKPOINT = "checkpoints/last.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(lengths, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """Global batches of one epoch, the same on every rank and after a resume (seeded by seed+epoch).

    With group_by_length, batches hold examples of similar length (HF's mega-batch grouping), so
    dynamic padding pads little; otherwise a plain random permutation.
    """
    from transformers.trainer_pt_utils import get_length_grouped_indices

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


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in state.items():
            params[n].copy_(v)


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class Trainer:
    def __init__(self, cfg, run_dir: Path, logger):
        self.cfg, self.run_dir, self.logger = cfg, Path(run_dir), logger
        self.t = cfg.trainer

    # ------------------------------------------------------------------ set-up
    def setup(self):
        from pasta_cli.backbones import load_model, load_tokenizer
        from pasta_cli.methods import apply_method
        from pasta_cli.tasks import encode, load_task, make_collator

        cfg, t = self.cfg, self.t
        cuda = torch.cuda.is_available() and t.device != "cpu"
        self.device_type = "cuda" if cuda else "cpu"
        dist.init(self.device_type)
        self.device = dist.local_device(self.device_type)
        self.world, self.rank = dist.world_size(), dist.rank()
        seed_everything(cfg.seed)

        self.task = load_task(cfg.task)
        token_task = self.task.kind == "token_classification"
        self.tokenizer = load_tokenizer(cfg.model.name_or_path, pretokenized=token_task)
        self.data = encode(self.task, self.tokenizer, t.max_length)
        self.collate = make_collator(self.task, self.tokenizer)
        self.train_rows = self.data["train"].to_list()
        self.head = self.task.kind  # task kinds are the head names backbones.load_model takes
        labels = self.task.labels
        id2label = {i: l for i, l in enumerate(labels)} if labels else None
        model = load_model(cfg.model.name_or_path, self.head, len(labels) if labels else 1, id2label,
                           dropout=cfg.model.get("dropout"))
        model = apply_method(model, self.tokenizer, cfg.method, self.task.pair)
        if t.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = model.to(self.device)
        self.is_pasta = hasattr(self.model, "pasta")
        self.train_module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # DDP registers only requires_grad parameters: with PASTA a few KB are all-reduced
            self.train_module = DDP(self.model, device_ids=[self.device.index] if cuda else None)
        if t.compile:
            self.train_module = torch.compile(self.train_module)

        self.params = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        lengths = [len(x) for x in self.data["train"]["input_ids"]]
        self.lengths = lengths
        self.global_batch = t.batch_size * self.world
        self.batches_per_epoch = math.ceil(len(lengths) / self.global_batch)
        steps_per_epoch = math.ceil(self.batches_per_epoch / t.grad_accum)
        self.total_steps = steps_per_epoch * t.epochs
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(o.warmup_ratio * self.total_steps), self.total_steps)
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.precision]
        self.scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
        return self

    # --------------------------------------------------------------- evaluation
    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def model_inputs(self, batch):
        if self.t.pad_to_max_length:  # the official code's fixed padding, kept for benchmarks
            batch = pad_batch(batch, self.t.max_length, self.tokenizer.pad_token_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if not self.is_pasta:
            batch.pop("special_tokens_mask", None)
        return batch

    @torch.no_grad()
    def predict(self, split: str):
        """(logits, labels) for a split, in dataset order; run on one process."""
        from torch.utils.data import DataLoader

        self.model.eval()
        loader = DataLoader(self.data[split], batch_size=self.t.eval_batch_size, collate_fn=self.collate)
        logits, labels = [], []
        for batch in loader:
            batch = self.model_inputs(batch)
            y = batch.pop("labels", None)
            with self.autocast():
                out = self.model(**batch).logits.float().cpu().numpy()
            logits.append(out)
            if y is not None:
                labels.append(y.cpu().numpy())
        self.model.train()
        if self.task.kind == "token_classification":  # pad token dimension to a common width
            width = max(x.shape[1] for x in logits)
            logits = [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0))) for x in logits]
            labels = [np.pad(y, ((0, 0), (0, width - y.shape[1])), constant_values=-100) for y in labels]
        return np.concatenate(logits), (np.concatenate(labels) if labels else None)

    def evaluate(self) -> dict[str, dict[str, float]]:
        from pasta_cli.tasks import compute_metrics, predictions

        scores = {}
        for split in self.task.eval_splits:
            logits, labels = self.predict(split)
            scores[split] = compute_metrics(self.task, predictions(self.task, logits), labels)
        return scores

    def main_score(self, scores) -> float:
        return scores[self.task.eval_splits[0]][self.t.main_metric]

    # ----------------------------------------------------------------- training
    def fit(self) -> dict:
        t, cfg = self.t, self.cfg
        main = dist.is_main()
        state = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_epoch": None, "best_step": None,
                 "best_scores": None, "best_state": None, "bad_evals": 0, "evals": 0, "wall": 0.0, "history": []}
        ckpt = self.run_dir / CHECKPOINT
        if cfg.resume:
            state = self.restore(ckpt, state)
        started = time.time() - state["wall"]
        metrics_path = self.run_dir / "metrics.jsonl"
        self.model.train()
        stop = state["step"] >= self.total_steps
        loss_sum, loss_n = 0.0, 0
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=state["step"], desc="train", disable=not (main and t.progress),
                   dynamic_ncols=True)

        while not stop and state["epoch"] < t.epochs:
            batches = epoch_batches(self.lengths, self.global_batch, cfg.seed, state["epoch"], t.group_by_length)
            for b in range(state["batch"], len(batches)):
                rows = [self.train_rows[i] for i in rank_slice(batches[b], self.rank, self.world)]
                batch = self.model_inputs(self.collate(rows))
                last_micro = (b + 1) % t.grad_accum == 0 or b + 1 == len(batches)
                sync = nullcontext() if last_micro or self.world == 1 else self.train_module.no_sync()
                with sync, self.autocast():
                    loss = self.train_module(**batch).loss / t.grad_accum
                (self.scaler.scale(loss) if self.scaler else loss).backward()
                loss_sum += loss.item() * t.grad_accum
                loss_n += 1
                state["batch"] = b + 1
                if not last_micro:
                    continue
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                if cfg.optim.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.max_grad_norm)
                if self.scaler:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                bar.update(1)
                if main and state["step"] % t.log_every_steps == 0:
                    self.logger.log({"train/loss": loss_sum / loss_n, "train/lr": self.scheduler.get_last_lr()[0],
                                     "train/epoch": state["epoch"] + state["batch"] / len(batches)}, state["step"])
                    bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
                stop = state["step"] >= self.total_steps
                end_of_epoch = state["batch"] == len(batches)
                if end_of_epoch:
                    state["epoch"], state["batch"] = state["epoch"] + 1, 0
                eval_now = (t.eval_every_steps and state["step"] % t.eval_every_steps == 0) or \
                    (not t.eval_every_steps and end_of_epoch) or stop
                if eval_now:
                    state["wall"] = time.time() - started
                    train_loss = dist.mean(loss_sum / max(loss_n, 1), self.device)
                    stop = self.eval_and_keep_best(state, train_loss, metrics_path) or stop
                    loss_sum, loss_n = 0.0, 0
                every = t.checkpoint_every_steps
                if (every and state["step"] % every == 0) or (not every and eval_now):
                    state["wall"] = time.time() - started
                    self.checkpoint(ckpt, state)
                if stop:
                    break
        bar.close()
        state["wall"] = time.time() - started
        if state["evals"] == 0:  # no evaluation happened yet (e.g. a resumed run that had finished training)
            self.eval_and_keep_best(state, float("nan"), metrics_path)
        return state

    def eval_and_keep_best(self, state, train_loss, metrics_path) -> bool:
        """Evaluate on rank 0, keep the best trainable tensors; returns True to stop early."""
        main = dist.is_main()
        state["evals"] += 1
        if main:
            scores = self.evaluate()
            score = self.main_score(scores)
            better = state["best"] is None or score > state["best"]
            record = {"step": state["step"], "epoch": state["epoch"], "train_loss": train_loss,
                      "lr": self.scheduler.get_last_lr()[0], "wall_s": round(state["wall"], 2), **{
                          f"{split}/{k}": v for split, s in scores.items() for k, v in s.items()}}
            report.append_jsonl(metrics_path, record)
            state["history"].append(record)
            self.logger.log({f"eval/{k}": v for k, v in record.items() if "/" in k}, state["step"])
            if better:
                state.update(best=score, best_epoch=state["epoch"], best_step=state["step"], best_scores=scores,
                             best_state=trainable_state(self.model), bad_evals=0)
                self.save_best()
            else:
                state["bad_evals"] += 1
            if self.is_pasta and self.model.pasta.num_vectors:
                path = report.norms_heatmap(self.model.pasta, self.slot_names(), self.run_dir / "norms.png",
                                            self.heatmap_title(state["step"]))
                self.logger.image("norms", path, state["step"])
        patience = self.t.early_stopping_patience
        stop = bool(main and patience and state["bad_evals"] >= patience)
        # every rank learns the decision and the best state (needed for the same final numbers)
        stop = dist.broadcast(stop)
        dist.barrier()
        return stop

    def slot_names(self):
        return report.slot_names(self.tokenizer, self.task.pair)

    def heatmap_title(self, step):
        return f"{self.cfg.task.name} · {self.cfg.model.tag} · {self.model.pasta.variant} · step {step}"

    def save_best(self):
        from pasta_cli.adapter import save_adapter, save_trainable

        if self.is_pasta:
            save_adapter(self.model, self.run_dir / "adapter", backbone=self.cfg.model.name_or_path, head=self.head,
                         pair=self.task.pair, task=self.cfg.task.name)
        else:
            save_trainable(self.model, self.run_dir / "adapter", method=self.cfg.method.name,
                           backbone=self.cfg.model.name_or_path, task=self.cfg.task.name)

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, path: Path, state: dict) -> None:
        if not dist.is_main():
            return
        save_checkpoint(path, {
            "state": state, "trainable": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        })

    def restore(self, path: Path, state: dict) -> dict:
        if not path.is_file():
            log.warning("resume=true but %s does not exist: starting from the beginning", path)
            return state
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        load_trainable_state(self.model, ckpt["trainable"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        # metrics.jsonl keeps exactly the evaluations the checkpoint knows about
        report.write_atomic(self.run_dir / "metrics.jsonl",
                            "".join(json.dumps(r, default=float) + "\n" for r in ckpt["state"]["history"]))
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, ckpt["state"]["step"],
                 ckpt["state"]["epoch"], ckpt["state"]["batch"])
        return ckpt["state"]

    # ----------------------------------------------------------------- finish
    def finish(self, state: dict) -> dict:
        """Restore the best tensors, write predictions, norms and results.json; returns the results."""
        from pasta_cli.methods import counts
        from pasta_cli.tasks import predictions, test_prediction_rows

        if not dist.is_main():
            return {}
        load_trainable_state(self.model, state["best_state"])
        # dev predictions of the best model; GLUE-format submissions for unlabelled test splits
        outputs = [(self.task.eval_splits[0], "dev_predictions.tsv")]
        outputs += [(s, f"{s.replace('test', 'test_predictions', 1)}.tsv") for s in self.task.splits if s.startswith("test")]
        for split, name in outputs:
            if split.startswith("test") and _labelled(self.task.splits[split]["label"]):
                continue  # a labelled test split (CoNLL-2003, builtin) is for evaluation, not a submission
            logits, labels = self.predict(split)
            rows = test_prediction_rows(self.task, self.data[split]["idx"], predictions(self.task, logits), labels, split=split)
            report.write_tsv(self.run_dir / name, ("index", "prediction"), rows)
        if self.is_pasta and self.model.pasta.num_vectors:
            report.norms_heatmap(self.model.pasta, self.slot_names(), self.run_dir / "norms.png",
                                 self.heatmap_title(state["best_step"]) + " (best)")
            self.logger.image("norms_best", self.run_dir / "norms.png")
        c = counts(self.model)
        cfg = self.cfg
        results = {
            "task": cfg.task.name, "model": cfg.model.tag, "backbone": cfg.model.name_or_path,
            "method": cfg.method.name, "variant": cfg.method.get("variant"),
            "main_metric": self.t.main_metric, "best_score": state["best"],
            "best_scores": state["best_scores"], "best_epoch": state["best_epoch"], "best_step": state["best_step"],
            "epochs_run": state["epoch"], "steps": state["step"],
            "trainable": c["trainable"], "trainable_method": c["method"], "trainable_head": c["head"],
            "trainable_pct": c["trainable_pct"], "trainable_method_pct": c["method_pct"], "backbone_params": c["backbone"],
            "seed": cfg.seed, "lr": cfg.optim.lr, "epochs": self.t.epochs,
            "batch_size_per_device": self.t.batch_size, "devices": self.world, "grad_accum": self.t.grad_accum,
            "effective_batch_size": self.t.batch_size * self.world * self.t.grad_accum,
            "precision": self.t.precision, "wall_time_s": round(state["wall"], 2),
        }
        report.write_json(self.run_dir / "results.json", results)
        self.logger.summary({k: v for k, v in results.items() if not isinstance(v, dict)})
        return results


def _labelled(labels) -> bool:
    """Whether any row has a gold label (unlabelled rows hold -1, or only -100 per token)."""
    return any((max(l, default=-1) if isinstance(l, list) else l) >= 0 for l in labels)


def pad_batch(batch: dict, length: int, pad_id: int) -> dict:
    """Pad every sequence tensor of a collated batch to `length` (what pad-to-max-length costs)."""
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1, "labels": -100}
    out = {}
    for k, v in batch.items():
        if v.dim() == 2 and v.shape[1] < length and k in fill:
            v = torch.nn.functional.pad(v, (0, length - v.shape[1]), value=fill[k])
        out[k] = v
    return out


def train(cfg, run_dir) -> dict:
    """Run one training job end to end in `run_dir`; returns results.json's content (rank 0)."""
    from pasta_cli.loggers import make_logger

    run_dir = Path(run_dir)
    trainer = Trainer(cfg, run_dir, None)
    trainer.setup()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    trainer.logger = make_logger(cfg, resolved, run_dir, dist.is_main())
    try:
        state = trainer.fit()
        results = trainer.finish(state)
    finally:
        trainer.logger.finish()
    return results

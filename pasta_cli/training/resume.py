"""What a checkpoint must agree with before `resume=true` continues it.

A checkpoint records the settings that shape training (`settings`: the task and a fingerprint of
its rows, the model, the method, the optimiser, the trainer's batch and schedule keys, the seed,
the number of processes). A resume with other values would train on the checkpoint's state under
settings the run folder would then claim, so it is refused with every difference listed, old -> new.

A few keys may change on resume (CHANGEABLE, documented in docs/RELIABILITY.md): how long to train,
how often to evaluate, log and checkpoint, early stopping, and how the work is run (device,
compile, eval batch size). Their changes are recorded in the checkpoint and in results.json
(`resumes`), so the record still says what happened.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from pasta_cli.errors import PastaError

# Keys that may differ on resume. trainer.epochs / trainer.max_steps: the linear schedule is recomputed
# for the new total from the step reached (the learning rate continues on the new slope).
CHANGEABLE = (
    "trainer.epochs", "trainer.max_steps", "trainer.eval_every_steps", "trainer.early_stopping_patience",
    "trainer.log_every_steps", "trainer.checkpoint_every_steps", "trainer.eval_batch_size", "trainer.progress",
    "trainer.num_workers", "trainer.device", "trainer.compile", "trainer.gradient_checkpointing",
    "trainer.packing", "model.attn_implementation",
)
# Keys newer than some checkpoints, with the value every run had before the key existed
ADDED_SINCE = {"optim.eps_before_bias_correction": False, "model.dtype": "fp32"}
TASK_KEYS = ("name", "kind", "pair", "labels")  # plus the rows' fingerprint; paths may move, the data may not


def _flat(prefix: str, node) -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(f"{prefix}.{key}", value).items()}
    return {prefix: node}


def settings(cfg, task, world: int) -> dict:
    """The flat {key: value} record of what shapes this run's training."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    record = {f"task.{k}": resolved["task"].get(k) for k in TASK_KEYS}
    record["task.data"] = {split: getattr(ds, "_fingerprint", None) for split, ds in task.splits.items()}
    for group in ("model", "method", "optim", "trainer"):
        record.update(_flat(group, resolved[group]))
    record.pop("model.tag", None)  # a short display name
    record["seed"] = resolved["seed"]
    record["devices"] = world
    return record


def changes(old: dict | None, new: dict, where: str) -> dict[str, list]:
    """The allowed differences {key: [old, new]} between a checkpoint's settings and this run's; a
    PastaError listing the others. A checkpoint without settings (none are written without them) is refused."""
    if old is None:
        raise PastaError(f"{where} records no settings to check a resume against: start a new run")
    old = {**ADDED_SINCE, **old}
    keys = sorted(set(old) | set(new))
    diff = {k: [old.get(k), new.get(k)] for k in keys if old.get(k) != new.get(k)}
    refused = {k: v for k, v in diff.items() if k not in CHANGEABLE}
    if refused:
        listed = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
        raise PastaError(f"resume=true with settings that differ from {where}: {listed}. Resume with the "
                         f"checkpoint's values, or start a new run (a new hydra.run.dir); keys that may change "
                         f"on resume: {', '.join(CHANGEABLE)}")
    return diff


def _show(value) -> str:
    return "(none)" if value is None else str(value)

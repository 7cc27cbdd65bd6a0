"""Checks of a composed config that the typed schema cannot make, run by `config.check_config` before any data
or model loads and before a run folder or its `.hydra/` is written:

- every number is finite (`optim.lr=nan`, `inf`, `1e999`: OmegaConf takes them as floats) and each setting is
  in its range (`optim.warmup_ratio` in [0, 1), dropouts in [0, 1), a seed numpy accepts, ...);
- every key is one the runner reads: Hydra's `+trainer.max_step=3` adds a key the schema does not know, which
  would be recorded in config.yaml as if it applied; it is refused with the nearest known key (difflib).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pasta_cli.errors import PastaError, check_number

SEED_LIMIT = 2**32  # numpy's seed range, [0, 2**32)
PROBABILITY = "give a probability in [0, 1), or null for the backbone's"

# key -> (check, what would be right); null is allowed where the schema allows it (checked before `ok`)
RANGES: dict[str, tuple[typing.Callable, str]] = {
    "optim.lr": (lambda v: v > 0, "give a positive learning rate (PASTA's Table 6: 1e-3 to 1e-2)"),
    "optim.weight_decay": (lambda v: v >= 0, "give a weight decay of 0 or more (0.01 is common)"),
    "optim.warmup_ratio": (lambda v: 0 <= v < 1, "give the share of steps spent warming up, in [0, 1) (e.g. 0.06)"),
    "optim.eps": (lambda v: v > 0, "give AdamW's epsilon, above 0 (1e-8)"),
    "optim.max_grad_norm": (lambda v: v > 0, "give a gradient-norm limit above 0, or null for no clipping"),
    "model.dropout": (lambda v: 0 <= v < 1, PROBABILITY),
    "trainer.log_every_steps": (lambda v: v >= 1, "give a whole number of steps, at least 1 (20)"),
    "trainer.eval_every_steps": (lambda v: v >= 1, "give a whole number of steps, at least 1, or null: every epoch"),
    "trainer.checkpoint_every_steps": (lambda v: v >= 1, "give a whole number of steps, at least 1, or null: "
                                       "at each evaluation"),
    "trainer.early_stopping_patience": (lambda v: v >= 1, "give a whole number of evaluations, at least 1, or null: "
                                        "never stop early"),
    "trainer.num_workers": (lambda v: v >= 0, "give a whole number of data-loading processes, 0 or more"),
    "seed": (lambda v: 0 <= v < SEED_LIMIT, f"give a whole number in [0, {SEED_LIMIT})"),
    # the method's own settings where several methods share a meaning (each baseline checks the rest)
    "method.dropout": (lambda v: 0 <= v < 1, PROBABILITY),
    "method.init_std": (lambda v: v >= 0, "give a standard deviation of 0 or more"),
}


def leaves(node, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, value) of every leaf of a resolved container."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), node


def resolved(cfg: DictConfig) -> dict:
    """The config with every interpolation resolved; one that fails (trainer.epochs=${oc.env:HOME}: not a whole
    number) is one PastaError line naming the key, here, before any run folder is written."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, PastaError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:  # our own resolver's refusal (paper.yaml's recipe has no such value)
            raise cause from None
        detail = str(e).splitlines()[0].replace("$VALUE", "").strip()
        raise PastaError(f"{getattr(e, 'full_key', None) or 'the config'}: {detail}") from None


def check_numbers(cfg: DictConfig) -> None:
    """No NaN or infinity anywhere in the settings, and each number in its range (RANGES)."""
    values = resolved(cfg)
    for key, value in leaves(values):
        if isinstance(value, float) and not math.isfinite(value):
            want = RANGES[key][1] if key in RANGES else "give a finite number"
            raise PastaError(f"{key}={value} is not a finite number: {want}")
    flat = dict(leaves(values))
    for key, (ok, want) in RANGES.items():
        if flat.get(key) is not None:
            check_number(key, flat[key], ok, want)
    betas = values["optim"]["betas"]
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise PastaError(f"optim.betas {betas}: give AdamW's two betas, each in [0, 1) (e.g. [0.9,0.999])")


def schema_keys(schema, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, field type) of a dataclass schema, nested dataclasses included."""
    for f in dataclasses.fields(schema):
        kind = typing.get_type_hints(schema)[f.name]
        yield prefix + f.name, kind
        inner = [t for t in (*typing.get_args(kind), kind) if dataclasses.is_dataclass(t)]
        if inner:
            yield from schema_keys(inner[0], f"{prefix}{f.name}.")


def config_keys(node, prefix: str = "", free: frozenset = frozenset()) -> Iterator[str]:
    """Every dotted key of a config, not descending into free-form values (dicts the schema leaves open)."""
    for k in node.keys() if isinstance(node, DictConfig) else ():
        key = f"{prefix}{k}"
        yield key
        child = node._get_node(k)
        if key not in free and isinstance(child, DictConfig) and not child._is_none():
            yield from config_keys(child, f"{key}.", free)


def check_known_keys(cfg: DictConfig, schema, method_schema=None) -> None:
    """Refuse a key the runner never reads (added with `+`), naming the nearest key it knows. `method_schema`:
    the method's typed settings (pasta_cli.methods); None for an untyped method, whose keys cannot be known here."""
    hints = dict(schema_keys(schema))
    # keys whose values the schema leaves open: a dict (task.files) or Any (logger, scale); method's are its own
    free = frozenset(k for k, t in hints.items() if _open(t)) - {"method"}
    known = set(hints)
    if method_schema is not None:
        known |= {f"method.{k}" for k, _ in schema_keys(method_schema)}
    for key in config_keys(cfg, free=free):
        open_method = key.startswith("method.") and method_schema is None
        if key in known or key.split(".")[0] in free or open_method or _inside(key, free):
            continue
        group = key.rsplit(".", 1)[0] + "." if "." in key else ""
        near = difflib.get_close_matches(key, sorted(k for k in known if k.startswith(group)), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else \
            f"the keys there are {', '.join(sorted(k.removeprefix(group) for k in known if _child(k, group)))}"
        raise PastaError(f"{key} is not a setting pasta-train reads, so it would be recorded but never used: {hint}")


def _open(kind) -> bool:
    return kind is typing.Any or dict in (typing.get_origin(kind), *map(typing.get_origin, typing.get_args(kind)))


def _inside(key: str, free: frozenset) -> bool:
    return any(key.startswith(f + ".") for f in free)


def _child(key: str, group: str) -> bool:
    return key.startswith(group) and "." not in key.removeprefix(group)

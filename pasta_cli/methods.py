"""What a method is, and the registry of every method the runner trains, by name.

A method lives in one module, its home (`pasta_cli.pasta`, `pasta_cli.baselines.<name>`, or a plugin's):
its typed settings (a `MethodSettings` dataclass: the defaults and the checks, in one place), how it is
applied, which parameters are its own (its modules inherit `modeling.AddedModule`), the tensors its adapter
holds (`Method.state` / `load_state`), and `register_method(...)` at the bottom. This module imports no home:
the built-in ones (HOMES) are imported on the first registry lookup, the way plugins are found, and import
this module. pasta_cli/config.py stores every registered method's settings in Hydra's ConfigStore, group
`method`, so `method=<config name>` picks them and a key of the wrong type or one the settings lack is
refused when the config is composed. The runner, the adapter format and the benchmark go through this
registry; none of them asks "is this PASTA?".
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn

from pasta_cli.errors import PastaError
from pasta_cli.modeling import copy_checked, freeze_empty, head_parameters, load_trainable, trainable_tensors

# the built-in methods' homes, in the order `choose one of ...` lists them; each registers itself on import
HOMES = ("pasta_cli.pasta", "pasta_cli.baselines.full", "pasta_cli.baselines.lora", "pasta_cli.baselines.prefix",
         "pasta_cli.baselines.adapter", "pasta_cli.baselines.diff_prune", "pasta_cli.baselines.peft_tuners",
         "pasta_cli.baselines.loreft")


@dataclass
class MethodSettings:
    """What every method's settings hold (`cfg.method`): the registered name of the method they build.
    A home subclasses it with its own fields (typed, with their defaults) and `check`."""

    name: str = MISSING

    def check(self) -> None:
        """Refuse, before a model loads, values the type alone does not rule out (one PastaError line)."""


S = TypeVar("S", bound=MethodSettings)


def with_changes(kind: type[S], settings: S | None, changes: dict) -> S:
    """`settings` (or `kind`'s defaults) with `changes`, checked: what an `apply_*` function builds with."""
    chosen = dataclasses.replace(settings if settings is not None else kind(), **changes)
    chosen.check()
    return chosen


@dataclass(frozen=True)
class Method:
    name: str
    apply: Callable[..., nn.Module]   # (model, tokenizer, settings, pair) -> the module to train
    settings: tuple[str, ...] = ()    # the settings adapter_config.json records, which rebuild the method from it
    peft: bool = False                # its adapter/ is PEFT's own format (PeftModel.from_pretrained loads it)
    # the typed settings (`apply` gets an instance); None: an untyped method (a plugin's conf/method/<name>.yaml)
    # whose `apply` gets the settings as a dict
    schema: type[MethodSettings] | None = None
    # config names besides `name` whose defaults differ: {"classifier_only": {"variant": ..., ...}}
    configs: Mapping[str, dict] = field(default_factory=dict, compare=False)
    # its frozen weights may be stored in model.dtype (bf16): not Diff-Prune's, to which its small diffs are added
    # (bf16's 8 bits of mantissa would round them away); full FT has none, every weight trains in fp32
    low_precision_frozen: bool = True

    def typed(self, settings) -> MethodSettings | dict:
        """`settings` (a composed config's `method`, a dict, an adapter's config: keys the schema lacks are
        ignored) as the method's dataclass, the defaults where they say nothing, checked."""
        if isinstance(settings, MethodSettings):
            values = dataclasses.asdict(settings)
        elif isinstance(settings, DictConfig):
            values = OmegaConf.to_container(settings, resolve=True)
        else:
            values = dict(settings or {})
        if self.schema is None:
            return values
        names = {f.name for f in dataclasses.fields(self.schema)}
        typed = self.schema(**{k: v for k, v in values.items() if k in names and k != "name"})
        typed.name = self.name
        typed.check()
        return typed

    def config_nodes(self) -> dict[str, MethodSettings]:
        """{config name: its settings}, what `method=<config name>` composes (none for an untyped method)."""
        if self.schema is None:
            return {}
        return {config: self.schema(**{"name": self.name, **changes})
                for config, changes in {self.name: {}, **self.configs}.items()}

    def check_tokenizer(self, tokenizer, pair: bool) -> None:
        """Refuse, before a model loads, a backbone whose tokenizer the method cannot work with."""

    def describe(self, model: nn.Module, settings: dict) -> dict:
        """What adapter_config.json records about the method (beyond backbone, head and task)."""
        return {k: settings.get(k) for k in self.settings}

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors the adapter holds."""
        return trainable_tensors(model)

    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
        load_trainable(model, tensors, f"adapter in '{where}'")

    def figure(self, model: nn.Module, tokenizer, pair: bool, path: Path, title: str) -> Path | None:
        """The method's own picture of what it learned, if it has one."""
        return None

    def param_groups(self, model: nn.Module, params: list[nn.Parameter]) -> list:
        """What the optimiser gets: the trainable parameters, or groups of them with their own settings."""
        return params

    def after_step(self, model: nn.Module, step: int, total_steps: int, scheduler) -> None:
        """Called after every optimiser step (`step` counts from 1), before evaluation and checkpoints."""


def load_head(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy an adapter's head tensors into the model's head; names and shapes must agree."""
    head = head_parameters(model)
    if set(tensors) != set(head):
        raise PastaError(f"adapter in '{where}' has head tensors {sorted(tensors)}; "
                         f"this model's head is {sorted(head)}")
    copy_checked(head, tensors, f"adapter in '{where}'")


class Registry(Mapping[str, Method]):
    """Every registered method by name: the built-in homes (imported on the first lookup), then the others
    in the order they registered."""

    def __init__(self):
        self._methods: dict[str, Method] = {}
        self._loading = False

    def _all(self) -> dict[str, Method]:
        if not self._loading:
            self._loading = True  # a home registering while the others import finds them loading, not again
            for home in HOMES:
                importlib.import_module(home)
        rank = {home: i for i, home in enumerate(HOMES)}
        order = sorted(self._methods.values(), key=lambda m: rank.get(getattr(m.apply, "__module__", ""), len(HOMES)))
        return {m.name: m for m in order}

    def add(self, method: Method) -> None:
        if method.name in self._all() and self._methods[method.name] is not method:
            raise PastaError(f"a method named '{method.name}' is already registered")
        self._methods[method.name] = method

    def __getitem__(self, name: str) -> Method:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


METHODS = Registry()


def register_method(method: Method) -> Method:
    """Add a method to the registry (a research variant, or the benchmark's floor), by its name."""
    METHODS.add(method)
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise PastaError(f"unknown method '{name}': choose one of {', '.join(METHODS)} (or classifier_only)")
    return METHODS[name]


def method_configs() -> dict[str, MethodSettings]:
    """Every registered method's config names and their settings (the `method` config group's options)."""
    return {config: node for method in METHODS.values() for config, node in method.config_nodes().items()}


def _name(settings: Any) -> str | None:
    """The method settings name; a settings object made without one (`LoraSettings(r=4)`): its class's method."""
    if not isinstance(settings, MethodSettings):
        return settings.get("name")
    if settings.name != MISSING:
        return settings.name
    return next((m.name for m in METHODS.values() if m.schema is type(settings)), None)


def check_method(settings) -> Method:
    """The method the settings name, once their values are known to work (before a model loads)."""
    method = get_method(_name(settings))
    method.typed(settings)
    return method


def apply_method(model, tokenizer, settings, pair: bool) -> nn.Module:
    """Freeze/extend `model` as the method's settings (a composed `cfg.method`, a dict, a `MethodSettings`)
    say; returns the module to train."""
    method = get_method(_name(settings))
    model = method.apply(model, tokenizer, method.typed(settings), pair)
    freeze_empty(model)  # whatever a method made, an empty tensor never trains
    return model

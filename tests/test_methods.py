"""A new method is one module: its typed settings (defaults and checks), how it is applied, which parameters
are its own, and its registration. The runner's config (`method=<name>`, typed overrides), its checks and the
parameter counts need nothing else."""

from dataclasses import dataclass

import pytest
import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from tiny_models import tiny
from torch import nn

from pasta_cli.config import check_config, compose
from pasta_cli.errors import PastaError
from pasta_cli.methods import METHODS, Method, MethodSettings, apply_method, get_method, register_method
from pasta_cli.modeling import (
    AddedModule,
    accept_special_tokens_mask,
    freeze_backbone,
    head_parameters,
    parameter_counts,
)

# ------------------------------------------------------------------ the whole method, as its module holds it


@dataclass
class GainSettings(MethodSettings):
    """A trained gain per unit of the first `width` hidden units (a toy)."""

    width: int = 4     # units with a gain
    init: float = 1.0  # the gains' start

    def check(self) -> None:
        if self.width < 1:
            raise PastaError(f"method.width {self.width}: give at least 1 unit")


class Gain(AddedModule):
    def __init__(self, width: int, init: float):
        super().__init__()
        self.gain = nn.Parameter(torch.full((width,), init))


def apply_gain(model, tokenizer, settings: GainSettings, pair: bool):
    freeze_backbone(model)
    model.gain = Gain(settings.width, settings.init)
    accept_special_tokens_mask(model)
    return model


# ------------------------------------------------------------------------------------------------- tests


@pytest.fixture
def gain():
    """The method registered for one test, then taken out again (the registry and the config group)."""
    method = register_method(Method("gain_test", apply_gain, ("width",), schema=GainSettings))
    yield method
    METHODS._methods.pop(method.name)
    ConfigStore.instance().repo["method"].pop(f"{method.name}.yaml", None)


def test_a_new_method_is_one_module(gain):
    assert get_method("gain_test") is gain
    cfg = compose(["method=gain_test", "method.width=3"])
    assert (cfg.method.name, cfg.method.width, cfg.method.init) == ("gain_test", 3, 1.0)
    check_config(cfg, cuda_available=False)
    model, tok = tiny("bert")
    model = apply_method(model, tok, cfg.method, pair=True)
    assert "gain.gain" not in head_parameters(model)  # declared the method's own by its module's class
    counts = parameter_counts(model)
    assert counts["method"] == 3 and counts["head"] == sum(p.numel() for p in model.classifier.parameters())
    model, tok = tiny("bert")  # in Python, the settings object alone names its method
    assert parameter_counts(apply_method(model, tok, GainSettings(width=2), pair=True))["method"] == 2


def test_a_new_methods_settings_are_typed_and_checked(gain):
    with pytest.raises(ConfigCompositionException, match="method.width=abc"):
        compose(["method=gain_test", "method.width=abc"])
    with pytest.raises(ConfigCompositionException, match="method.widht"):
        compose(["method=gain_test", "method.widht=3"])
    with pytest.raises(PastaError, match="method.width 0: give at least 1 unit"):
        check_config(compose(["method=gain_test", "method.width=0"]), cuda_available=False)


def test_every_built_in_method_is_typed_and_its_module_is_its_home():
    built_in = ["pasta", "full_ft", "bitfit", "lora", "prefix", "adapter", "diff_prune", "ia3", "vera", "ln_tuning",
                "trainable_tokens", "road", "fourierft", "loreft"]
    assert list(METHODS)[:len(built_in)] == built_in  # the homes' order, whichever home was imported first
    for name in built_in:
        method = METHODS[name]
        assert method.schema is not None and issubclass(method.schema, MethodSettings), name
        assert method.apply.__module__.startswith(("pasta_cli.pasta", "pasta_cli.baselines.")), name

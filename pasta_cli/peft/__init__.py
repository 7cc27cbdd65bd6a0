"""PASTA as a PEFT method: importing this module registers it, through PEFT's own method registry.

    import pasta_cli.peft  # noqa: F401  (registers PeftType.PASTA)
    from pasta_cli.peft import PastaConfig
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(path), PastaConfig(pair=False,
                                                                                                task_type="SEQ_CLS"))

`peft.utils.register_peft_method(name="pasta", config_cls=PastaConfig, model_cls=PastaModel, prefix="pasta.")` is
the registration, as PEFT's own tuners make it (peft/tuners/<method>/__init__.py). It requires the name in the
`PeftType` enum, which lists PEFT's own methods only; `_add_peft_type` adds PASTA to it first (the one step
beside the public registry call). What it gives: get_peft_model, save_pretrained / PeftModel.from_pretrained,
add_adapter / load_adapter / set_adapter / delete_adapter, `adapter_names=` mixed batches, Trainer and DDP.
"""

from __future__ import annotations

from peft.utils import PeftType, register_peft_method


def _add_peft_type(name: str) -> PeftType:
    """PeftType.<name>, added to the enum where it is missing (as enum's own members are built)."""
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_, member._value_ = name, name
    member.__objclass__ = PeftType
    member._sort_order_ = len(PeftType._member_names_)
    type.__setattr__(PeftType, name, member)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    return member


_add_peft_type("PASTA")

from pasta_cli.peft.config import PastaConfig, peft_keys  # noqa: E402  (PeftType.PASTA first)
from pasta_cli.peft.tuner import PastaHead, PastaLayer, PastaModel, head_modules  # noqa: E402


def _register() -> None:
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    if PEFT_TYPE_TO_TUNER_MAPPING.get(PeftType.PASTA) is not PastaModel:
        register_peft_method(name="pasta", config_cls=PastaConfig, model_cls=PastaModel, prefix=PastaModel.prefix)


_register()

__all__ = ["PastaConfig", "PastaHead", "PastaLayer", "PastaModel", "head_modules", "peft_keys"]

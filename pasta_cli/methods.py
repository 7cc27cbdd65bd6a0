"""One entry point for every method the runner trains: PASTA (and its ablations) and the baselines."""

from __future__ import annotations

from pasta_cli.errors import PastaError
from pasta_cli.pasta import VARIANTS, add_pasta, parameter_counts

METHODS = ("pasta", "classifier_only", "full_ft", "bitfit", "lora", "prefix")


def check_method(method_cfg) -> None:
    name = method_cfg.get("name")
    if name not in METHODS:
        raise PastaError(f"unknown method '{name}': choose one of {', '.join(METHODS)}")
    if name == "pasta" and method_cfg.get("variant") not in VARIANTS:
        raise PastaError(f"unknown method.variant '{method_cfg.get('variant')}': choose one of {', '.join(VARIANTS)}")


def apply_method(model, tokenizer, method_cfg, pair: bool):
    """Freeze/extend `model` as the method says; returns the module to train."""
    check_method(method_cfg)
    name = method_cfg["name"]
    if name in ("pasta", "classifier_only"):
        variant = "classifier_only" if name == "classifier_only" else method_cfg["variant"]
        add_pasta(model, tokenizer, variant, pair=pair, dropout=method_cfg.get("dropout"),
                  init_std=method_cfg.get("init_std") or 0.0)
        return model
    from pasta_cli import baselines

    if name == "full_ft":
        return baselines.apply_full_ft(model)
    if name == "bitfit":
        return baselines.apply_bitfit(model)
    if name == "lora":
        return baselines.apply_lora(model, r=method_cfg.get("r", 8), alpha=method_cfg.get("alpha", 16),
                                    dropout=method_cfg.get("dropout", 0.1),
                                    target_modules=method_cfg.get("target_modules"))
    return baselines.apply_prefix(model, length=method_cfg.get("length", 20), dropout=method_cfg.get("dropout", 0.1))


def counts(model) -> dict:
    """Trainable counts in one shape for every method: `method` excludes the head (the paper's %)."""
    if hasattr(model, "pasta"):
        c = parameter_counts(model)
        return {"backbone": c["backbone"], "method": c["pasta"], "head": c["head"], "trainable": c["trainable"],
                "method_pct": c["pasta_pct"], "trainable_pct": c["trainable_pct"]}
    from pasta_cli.baselines import trainable_counts

    return trainable_counts(model)

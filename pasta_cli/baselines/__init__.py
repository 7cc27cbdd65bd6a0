"""The paper's baselines, trained in the same runner as PASTA, one module each. Every `apply_*` takes a
freshly loaded `...ForSequenceClassification` / `...ForTokenClassification` model and returns the
module to train (LoRA returns the PEFT wrapper); `pasta_cli.methods` maps method names to them."""

from pasta_cli.baselines.full import apply_bitfit, apply_full_ft
from pasta_cli.baselines.lora import apply_lora
from pasta_cli.baselines.prefix import apply_prefix

__all__ = ["apply_bitfit", "apply_full_ft", "apply_lora", "apply_prefix"]

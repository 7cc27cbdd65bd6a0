"""The paper's baselines, trained in the same runner as PASTA, one module each: its typed settings, its
`apply_*`, its adapter tensors and its registration (pasta_cli.methods). Every `apply_*` takes a freshly
loaded `...ForSequenceClassification` / `...ForTokenClassification` model and returns the module to train
(LoRA returns the PEFT wrapper)."""

from pasta_cli.baselines.adapter import apply_adapter
from pasta_cli.baselines.diff_prune import apply_diff_prune
from pasta_cli.baselines.full import apply_bitfit, apply_full_ft
from pasta_cli.baselines.lora import apply_lora
from pasta_cli.baselines.loreft import apply_loreft
from pasta_cli.baselines.prefix import apply_prefix

__all__ = ["apply_adapter", "apply_bitfit", "apply_diff_prune", "apply_full_ft", "apply_lora", "apply_loreft",
           "apply_prefix"]

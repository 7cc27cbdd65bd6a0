"""The paper's baselines, trained in the same runner as PASTA, one module each. Every `apply_*` takes a
freshly loaded `...ForSequenceClassification` / `...ForTokenClassification` model and returns the
module to train (LoRA returns the PEFT wrapper); `pasta_cli.methods` maps method names to them."""

from pasta_cli.baselines.adapter import INIT_STD as ADAPTER_INIT_STD
from pasta_cli.baselines.adapter import apply_adapter, check_adapter
from pasta_cli.baselines.diff_prune import after_step as diff_prune_after_step
from pasta_cli.baselines.diff_prune import apply_diff_prune, check_diff_prune
from pasta_cli.baselines.diff_prune import param_groups as diff_prune_param_groups
from pasta_cli.baselines.full import apply_bitfit, apply_full_ft
from pasta_cli.baselines.lora import apply_lora, check_lora
from pasta_cli.baselines.prefix import apply_prefix, check_prefix

__all__ = ["ADAPTER_INIT_STD", "apply_adapter", "apply_bitfit", "apply_diff_prune", "apply_full_ft", "apply_lora",
           "apply_prefix", "check_adapter", "check_diff_prune", "check_lora", "check_prefix", "diff_prune_after_step",
           "diff_prune_param_groups"]

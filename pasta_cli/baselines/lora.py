"""LoRA (Hu et al., 2022) through the PEFT library: W x + (alpha / r) B A x on the attention query and
value projections (r, alpha and the dropout on the LoRA input: `LoraSettings`, from LoRA's recipe); the task
head trains (PEFT's modules_to_save copy of it). It goes through the PEFT tuners' one path (`peft_tuners.wrap`;
its folder loads with `peft_tuners.load_peft`); PEFT's tuner layers declare their own parameters
(`adapter_layer_names`), which modeling.added_parameters reads.

PEFT is imported where LoRA is used, not at the top: importing it costs about 4 s of CPU on top of
transformers, which every other method and every pasta-train start would otherwise pay.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pasta_cli.baselines.peft_tuners import default_lora_targets, linear_names, task_type, wrap
from pasta_cli.errors import PastaError, check_number
from pasta_cli.methods import Method, MethodSettings, register_method, with_changes
from pasta_cli.paper_data import recipe

# LoRA's recipe (paper.yaml recipes.lora, microsoft/LoRA's RoBERTa-large scripts): its common values, which
# are every run's (a recipe's task and backbone entries hold budgets, never a method setting)
RECIPE = recipe("lora")


@dataclass
class LoraSettings(MethodSettings):
    """LoRA (`method=lora`, Hu et al. 2022) through the PEFT library, on the attention query/value projections."""

    r: int = RECIPE["r"]
    alpha: int = RECIPE["alpha"]            # PEFT's lora_alpha (an int there): the scale is alpha / r
    dropout: float = RECIPE["dropout"]      # on the LoRA input; the scripts use none
    target_modules: list[str] | None = None  # null: query,value (BERT/ELECTRA names; RoBERTa shares them)

    def check(self) -> None:
        """Refuse settings PEFT would refuse later, with a traceback (the runner calls this before a model loads);
        the target modules are checked against the model, once it is loaded."""
        check_number("method.r", self.r, lambda v: v >= 1,
                     "give the LoRA rank, a whole number of at least 1 (Hu et al.: 8)", whole=True)
        check_number("method.alpha", self.alpha, lambda v: v > 0, "give LoRA's scaling alpha, above 0 (Hu et al.: 16)")
        check_number("method.dropout", self.dropout, lambda v: 0 <= v < 1, "give a dropout probability in [0, 1)")


def apply_lora(model: nn.Module, settings: LoraSettings | None = None, **changes) -> nn.Module:
    """LoRA on the attention projections through PEFT; LoRA matrices + task head train. `settings` (else
    LoraSettings' defaults) with `changes` (r=4, target_modules=[...], ...).

    Returns the PeftModel (task type SEQ_CLS or TOKEN_CLS, from the model's class).
    """
    from peft import LoraConfig

    s = with_changes(LoraSettings, settings, changes)
    if s.target_modules is None:
        target_modules = default_lora_targets(model)
    else:
        target_modules = list(s.target_modules)
        missing = set(target_modules) - linear_names(model)
        if missing:
            raise PastaError(
                f"LoRA target modules {sorted(missing)} are not linear layers of {type(model).__name__}: "
                f"choose among {', '.join(sorted(linear_names(model)))}"
            )
    config = LoraConfig(task_type=task_type(model), r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                        target_modules=target_modules, bias="none")
    return wrap(model, config, "lora")


LORA = register_method(Method("lora", lambda model, tok, s, pair: apply_lora(model, s),
                              ("r", "alpha", "dropout", "target_modules"), peft=True, schema=LoraSettings))

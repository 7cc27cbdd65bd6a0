"""LoRA (Hu et al., 2022) through the PEFT library: W x + (alpha / r) B A x on the attention query and
value projections (r, alpha and the dropout on the LoRA input: `LoraSettings`, from LoRA's recipe); the task
head trains (PEFT's modules_to_save copy of it). Its adapter folder is PEFT's own format; PEFT's tuner layers
declare their own parameters (`adapter_layer_names`), which modeling.added_parameters reads.

PEFT is imported where LoRA is used, not at the top: importing it costs about 4 s of CPU on top of
transformers, which every other method and every pasta-train start would otherwise pay.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pasta_cli.errors import PastaError, check_number
from pasta_cli.methods import Method, MethodSettings, register_method, with_changes
from pasta_cli.modeling import accept_special_tokens_mask, head_parameters
from pasta_cli.paper_data import recipe

# LoRA's recipe (paper.yaml recipes.lora, microsoft/LoRA's RoBERTa-large scripts): its common values, which
# are every run's (a recipe's task and backbone entries hold budgets, never a method setting)
RECIPE = recipe("lora")

_TARGET_ALIASES = (  # default targets in the naming of each family (BERT/RoBERTa/ELECTRA first)
    ("query", "value"),
    ("query_proj", "value_proj"),  # DeBERTa
    ("q_lin", "v_lin"),  # DistilBERT
    ("q_proj", "v_proj"),
)


def _linear_names(model: nn.Module) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in model.base_model.named_modules() if isinstance(m, nn.Linear)}


def default_lora_targets(model: nn.Module) -> list[str]:
    """query/value projection names of this backbone (BERT, RoBERTa, ELECTRA: query, value)."""
    names = _linear_names(model)
    for targets in _TARGET_ALIASES:
        if set(targets) <= names:
            return list(targets)
    raise PastaError(
        f"found no query/value projections in {type(model).__name__}: pass lora target_modules "
        f"explicitly (its linear layers: {', '.join(sorted(names))})"
    )


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
    from peft import LoraConfig, TaskType, get_peft_model

    s = with_changes(LoraSettings, settings, changes)
    task = TaskType.TOKEN_CLS if type(model).__name__.endswith("ForTokenClassification") else TaskType.SEQ_CLS
    target_modules = s.target_modules
    if target_modules is None:
        target_modules = default_lora_targets(model)
    else:
        target_modules = list(target_modules)
        missing = set(target_modules) - _linear_names(model)
        if missing:
            raise PastaError(
                f"LoRA target modules {sorted(missing)} are not linear layers of {type(model).__name__}: "
                f"choose among {', '.join(sorted(_linear_names(model)))}"
            )
    head = sorted({n.split(".", 1)[0] for n in head_parameters(model)})
    config = LoraConfig(task_type=task, r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                        target_modules=target_modules, modules_to_save=head, bias="none")
    peft_model = get_peft_model(model, config)
    accept_special_tokens_mask(peft_model)
    return peft_model


def load_lora(model: nn.Module, directory) -> nn.Module:
    """A LoRA adapter folder (PEFT's format) on `model`, ready for inference."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(directory))
    accept_special_tokens_mask(peft_model)
    return peft_model.eval()


LORA = register_method(Method("lora", lambda model, tok, s, pair: apply_lora(model, s),
                              ("r", "alpha", "dropout", "target_modules"), peft=True, schema=LoraSettings))

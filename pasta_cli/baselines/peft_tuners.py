"""Today's tiny-budget methods through PEFT, by one generic path: (IA)^3, VeRA, LN-tuning, TrainableTokens,
RoAd and FourierFT. Each is a row of `TUNERS`: its PEFT config class, its settings (a `PeftSettings`, defaults
from its recipe in paper.yaml) and the config keywords they give, with the targets chosen on the model in
this backbone's naming. `apply_tuner` wraps any of them the same way: the task head trains as PEFT's
modules_to_save copy and is saved with the method, every folder is PEFT's own format (`load_peft`, which LoRA's
folders use too) plus pasta_config.json.

What each trains (the counts for BERT-large: docs/BASELINES.md, tests/test_peft_tuners.py):
- ia3: a vector scaling the keys, the values and the FFN's inner activations (Liu et al. 2022, T-Few's l_k, l_v,
  l_ff: the input of the FFN's output projection), of every layer;
- vera: per query/value projection, the vectors d (r) and b (output size) around frozen random matrices shared
  by every layer (Kopiczko et al. 2024);
- ln_tuning: a trained copy of every LayerNorm (gain and bias) of the backbone (Qi et al. 2022);
- trainable_tokens: the input-embedding rows of the special tokens the tokenizer's template inserts ([CLS],
  [SEP]; <s>, </s>): PASTA's nearest PEFT relative, which adapts those tokens at the input only, and one row per
  token id rather than one vector per slot and layer;
- road: 2D rotations with trained angle and scale per pair of output features of the query/value projections
  (Liao et al. 2024);
- fourierft: n trained spectral coefficients per query/value projection, at frequencies drawn from a fixed
  seed, whose inverse DFT is the weight update (Gao et al. 2024).

PEFT is imported where a tuner is used (as LoRA's home explains: 4 s of CPU at every pasta-train start).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from torch import nn

from pasta_cli.errors import PastaError, check_number
from pasta_cli.methods import Method, MethodSettings, register_method
from pasta_cli.modeling import accept_special_tokens_mask, encoder_layers, head_modules, template_token_ids
from pasta_cli.paper_data import recipe


@dataclass
class PeftSettings(MethodSettings):
    """What every PEFT tuner's settings hold: the modules it targets (null: its own default on this backbone)."""

    target_modules: list[str] | None = None


@dataclass
class Ia3Settings(PeftSettings):
    """(IA)^3 (`method=ia3`, Liu et al. 2022): null targets are the keys, values and FFN output projections."""


@dataclass
class VeraSettings(PeftSettings):
    """VeRA (`method=vera`, Kopiczko et al. 2024) on the query/value projections."""

    r: int = recipe("vera")["r"]
    d_initial: float = recipe("vera")["d_initial"]
    dropout: float = recipe("vera")["dropout"]
    projection_prng_key: int = recipe("vera")["projection_prng_key"]

    def check(self) -> None:
        check_number("method.r", self.r, lambda v: v >= 1, "give VeRA's rank, a whole number of at least 1", whole=True)
        check_number("method.dropout", self.dropout, lambda v: 0 <= v < 1, "give a dropout probability in [0, 1)")


@dataclass
class LnTuningSettings(PeftSettings):
    """LN-tuning (`method=ln_tuning`, Qi et al. 2022): null targets are every LayerNorm of the backbone."""


@dataclass
class TrainableTokensSettings(PeftSettings):
    """TrainableTokens (`method=trainable_tokens`, PEFT): the input-embedding rows of `tokens`."""

    tokens: list[str] | None = None  # null: the special tokens the tokenizer's template inserts ([CLS], [SEP])


@dataclass
class RoadSettings(PeftSettings):
    """RoAd (`method=road`, Liao et al. 2024) on the query/value projections."""

    variant: str = recipe("road")["variant"]
    group_size: int = recipe("road")["group_size"]

    def check(self) -> None:
        if self.variant not in ("road_1", "road_2", "road_4"):
            raise PastaError(f"method.variant={self.variant!r} is no RoAd variant: choose road_1, road_2 or road_4")
        check_number("method.group_size", self.group_size, lambda v: v >= 2 and v % 2 == 0,
                     "give an even group size of at least 2 (RoAd: 64)", whole=True)


@dataclass
class FourierftSettings(PeftSettings):
    """FourierFT (`method=fourierft`, Gao et al. 2024) on the query/value projections."""

    n_frequency: int = recipe("fourierft")["n_frequency"]
    scaling: float = recipe("fourierft")["scaling"]
    random_loc_seed: int = recipe("fourierft")["random_loc_seed"]

    def check(self) -> None:
        check_number("method.n_frequency", self.n_frequency, lambda v: v >= 1,
                     "give how many spectral coefficients train, at least 1 (FourierFT: 1000)", whole=True)
        check_number("method.scaling", self.scaling, lambda v: v > 0, "give FourierFT's scaling, above 0")


# --------------------------------------------------------------------------------------- default targets
_QUERY_VALUE = (  # the query/value projections in the naming of each family (BERT/RoBERTa/ELECTRA first)
    ("query", "value"),
    ("query_proj", "value_proj"),  # DeBERTa
    ("q_lin", "v_lin"),  # DistilBERT
    ("q_proj", "v_proj"),
)


def linear_names(model: nn.Module) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in model.base_model.named_modules() if isinstance(m, nn.Linear)}


def default_lora_targets(model: nn.Module) -> list[str]:
    """query/value projection names of this backbone (BERT, RoBERTa, ELECTRA: query, value): LoRA's targets, and
    VeRA's, RoAd's and FourierFT's, as their papers adapt the same two."""
    names = linear_names(model)
    for targets in _QUERY_VALUE:
        if set(targets) <= names:
            return list(targets)
    raise PastaError(
        f"found no separate query/value projections in {type(model).__name__}: pass method.target_modules "
        f"explicitly (its linear layers: {', '.join(sorted(names))})"
    )


def _key_value(model: nn.Module) -> list[str]:
    """Every layer's key and value projections (BERT/RoBERTa/ELECTRA key, value; DeBERTa key_proj, value_proj)."""
    for pair in (("key", "value"), ("key_proj", "value_proj"), ("k_lin", "v_lin"), ("k_proj", "v_proj")):
        found = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in pair]
        if found:
            return found
    raise PastaError(f"(IA)^3 scales separate key and value projections; {type(model).__name__} has none (a fused "
                     "query/key/value projection?): pass method.target_modules naming the modules to scale")


def _ffn_outputs(model: nn.Module) -> list[str]:
    """Every layer's FFN output projection: the Linear that reads the intermediate size back into the hidden one."""
    config = model.config
    layers = {id(layer) for layer in encoder_layers(model)}
    found = []
    for name, layer in model.named_modules():
        if id(layer) in layers:
            found += [f"{name}.{n}" for n, m in layer.named_modules()
                      if isinstance(m, nn.Linear) and m.in_features == config.intermediate_size
                      and m.out_features == config.hidden_size]
    return found


def _ia3(model, tokenizer, s: Ia3Settings) -> dict:
    if s.target_modules is not None:
        return {"target_modules": list(s.target_modules), "feedforward_modules": []}
    ffn = _ffn_outputs(model)
    return {"target_modules": _key_value(model) + ffn, "feedforward_modules": ffn}  # FFN: scale the input


def _layer_norms(model: nn.Module) -> list[str]:
    prefix = model.base_model_prefix + "."
    return [n for n, m in model.named_modules() if n.startswith(prefix) and isinstance(m, nn.LayerNorm)]


def _special_rows(model, tokenizer, s: TrainableTokensSettings) -> dict:
    if s.tokens is None:
        ids = template_token_ids(tokenizer)
    else:
        vocab = tokenizer.get_vocab()
        unknown = [t for t in s.tokens if t not in vocab]
        if unknown:
            raise PastaError(f"method.tokens {unknown} are not in the tokenizer's vocabulary: give tokens such as "
                             f"{tokenizer.cls_token or tokenizer.bos_token}")
        ids = [vocab[t] for t in s.tokens]
    embeddings = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is embeddings)
    return {"token_indices": ids, "target_modules": [name]}


def _query_value(model, s) -> list[str]:
    return list(s.target_modules) if s.target_modules is not None else default_lora_targets(model)


@dataclass(frozen=True)
class Tuner:
    """One PEFT tuner: its config class and the keywords its settings give on a model."""

    config: str
    schema: type[PeftSettings]
    options: Callable[[nn.Module, object, PeftSettings], dict]


TUNERS = {
    "ia3": Tuner("IA3Config", Ia3Settings, _ia3),
    "vera": Tuner("VeraConfig", VeraSettings, lambda m, t, s: {
        "target_modules": _query_value(m, s), "r": s.r, "d_initial": s.d_initial, "vera_dropout": s.dropout,
        "projection_prng_key": s.projection_prng_key}),
    "ln_tuning": Tuner("LNTuningConfig", LnTuningSettings, lambda m, t, s: {
        "target_modules": list(s.target_modules) if s.target_modules is not None else _layer_norms(m)}),
    "trainable_tokens": Tuner("TrainableTokensConfig", TrainableTokensSettings, _special_rows),
    "road": Tuner("RoadConfig", RoadSettings, lambda m, t, s: {
        "target_modules": _query_value(m, s), "variant": s.variant, "group_size": s.group_size}),
    "fourierft": Tuner("FourierFTConfig", FourierftSettings, lambda m, t, s: {
        "target_modules": _query_value(m, s), "n_frequency": s.n_frequency, "scaling": s.scaling,
        "random_loc_seed": s.random_loc_seed}),
}


# --------------------------------------------------------------------------------------- the one path
def task_type(model: nn.Module):
    from peft import TaskType

    return TaskType.TOKEN_CLS if type(model).__name__.endswith("ForTokenClassification") else TaskType.SEQ_CLS


def with_head(config, model: nn.Module):
    """`config` with the head in modules_to_save. TrainableTokensConfig has no such field: PEFT reads it with
    getattr, so an attribute does (it is not written to adapter_config.json: `load_peft` sets it again)."""
    config.modules_to_save = head_modules(model)
    return config


def wrap(model: nn.Module, config, method: str) -> nn.Module:
    """get_peft_model, with PEFT's refusal of a backbone (a target it cannot adapt) as one line."""
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, with_head(config, model))
    except (ValueError, TypeError, NotImplementedError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise PastaError(f"{method} cannot adapt {type(model).__name__} through PEFT ({reason}): pass "
                         f"method.target_modules naming modules it supports, or choose another method") from None
    accept_special_tokens_mask(peft_model)
    return peft_model


def apply_tuner(name: str, model: nn.Module, tokenizer, settings: PeftSettings) -> nn.Module:
    """The PEFT tuner `name` on `model` as its settings say; the tuner's parameters and the head train."""
    import peft

    tuner = TUNERS[name]
    config = getattr(peft, tuner.config)(task_type=task_type(model), **tuner.options(model, tokenizer, settings))
    return wrap(model, config, name)


def load_peft(model: nn.Module, directory) -> nn.Module:
    """A PEFT adapter folder (LoRA's, or any tuner's above) on `model`, ready for inference."""
    from peft import PeftConfig, PeftModel

    config = with_head(PeftConfig.from_pretrained(str(directory)), model)
    peft_model = PeftModel.from_pretrained(model, str(directory), config=config)
    accept_special_tokens_mask(peft_model)
    return peft_model.eval()


for _name, _tuner in TUNERS.items():
    register_method(Method(_name, lambda model, tok, s, pair, name=_name: apply_tuner(name, model, tok, s),
                           tuple(f.name for f in fields(_tuner.schema) if f.name != "name"), peft=True,
                           schema=_tuner.schema))

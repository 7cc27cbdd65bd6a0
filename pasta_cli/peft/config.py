"""PastaConfig: PASTA's settings as a PEFT config, and the keys that make one adapter_config.json serve both loaders.

The file PEFT writes for PASTA (`save_pretrained`) and the file pasta-cli writes (`save_adapter`) are the same:
PEFT's keys (`peft_type: PASTA`, `task_type`, `base_model_name_or_path`, `modules_to_save`, ...) beside
pasta-cli's (`format_version`, `method: pasta`, `backbone`, `variant`, `num_slots`, `slot_to_vector`, `head`,
`num_labels`, `id2label`, ...). PastaConfig holds both as fields: the tuner fills pasta-cli's when it puts the
adapter on a model, and `peft_keys` adds PEFT's to a file pasta-cli writes. A key this version does not know (a
later pasta-cli's) is dropped on loading, as PEFT drops a later PEFT's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from peft.config import PeftConfig
from peft.utils import PeftType

from pasta_cli.backbones import resolve
from pasta_cli.errors import PastaError
from pasta_cli.pasta import VARIANTS, count_slots, template_token_ids

NAME = "pasta"              # the method's name in PEFT's registry (PeftType.PASTA)
FORMAT_VERSION = 1          # pasta-cli's adapter format (pasta_cli.adapter.FORMAT_VERSION)
HEADS = {"classification": "SEQ_CLS", "regression": "SEQ_CLS", "token_classification": "TOKEN_CLS"}


@dataclass
class PastaConfig(PeftConfig):
    """PASTA (Yang et al., EACL 2023) for PEFT: one trained vector per layer and special-token slot.

    variant: full | cls_only | sep_only | shared | classifier_only (pasta_cli.pasta.VARIANTS).
    pair: whether the task feeds sentence pairs ([CLS] A [SEP] B [SEP]: 3 BERT slots) or single sentences (2).
    num_slots, slot_token_ids: the tokenizer's template (None: read off the tokenizer saved with the base model,
    `base_model_name_or_path`; `PastaConfig.from_tokenizer` fills them from a tokenizer in hand).
    dropout, init_std: on the added vectors / their initial std; None: the backbone's hidden_dropout_prob and
    initializer_range, as pasta-train and the authors' code.
    """

    variant: str = field(default="full", metadata={"help": "full, cls_only, sep_only, shared or classifier_only"})
    pair: bool = field(default=True, metadata={"help": "sentence pairs (True) or single sentences"})
    dropout: float | None = field(default=None, metadata={"help": "on the vectors; None: hidden_dropout_prob"})
    init_std: float | None = field(default=None, metadata={"help": "None: initializer_range; 0: zeros"})
    num_slots: int | None = field(default=None, metadata={"help": "special tokens per input (template)"})
    slot_token_ids: list | None = field(default=None, metadata={"help": "ids the tokenizer's template inserts"})
    modules_to_save: list | None = field(default=None, metadata={"help": "the head modules (found if None)"})
    # pasta-cli's adapter keys (pasta_cli.adapter), filled when the adapter is put on a model
    format_version: int = FORMAT_VERSION
    method: str = NAME
    backbone: str | None = None
    model_type: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_vectors: int | None = None
    slot_to_vector: list | None = None
    head: str | None = None
    num_labels: int | None = None
    id2label: dict | None = None
    task: str | None = None
    max_length: int | None = None
    task_spec: dict | None = None
    tokenizer: dict | None = None

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.PASTA
        if self.variant not in VARIANTS:
            raise PastaError(f"unknown PASTA variant '{self.variant}': choose one of {', '.join(VARIANTS)}")

    @classmethod
    def from_tokenizer(cls, tokenizer, pair: bool = True, **kwargs) -> PastaConfig:
        """A config whose slots are read off `tokenizer` (no tokenizer is loaded when the adapter is applied)."""
        return cls(pair=pair, num_slots=count_slots(tokenizer, pair), slot_token_ids=template_token_ids(tokenizer),
                   **kwargs)

    @classmethod
    def check_kwargs(cls, **kwargs):
        known = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in kwargs.items() if k in known}


def head_kind(model) -> str:
    """classification | regression | token_classification, from the transformers model's class and config."""
    if type(model).__name__.endswith("ForTokenClassification"):
        return "token_classification"
    regression = model.config.problem_type == "regression" or model.config.num_labels == 1
    return "regression" if regression else "classification"


def peft_keys(slot_token_ids: list[int], head: str, backbone: str, modules_to_save: list[str]) -> dict:
    """PEFT's keys for the adapter_config.json pasta-cli writes, so that `PeftModel.from_pretrained` loads it."""
    try:  # a packaged name (minilm) becomes the folder PEFT can load
        path = resolve(backbone)
    except PastaError:
        path = backbone
    return {"peft_type": PeftType.PASTA.value, "task_type": HEADS[head], "base_model_name_or_path": path,
            "revision": None, "inference_mode": True, "modules_to_save": modules_to_save,
            "slot_token_ids": slot_token_ids, "init_std": None}

"""What each method trains on BERT-large and RoBERTa-large, counted on the real architectures, offline.

The models are built from transformers' BertConfig / RobertaConfig at their published large sizes on the meta
device (no weights, no download), each method is put on them exactly as pasta-train does
(pasta_cli.methods.apply_method), and pasta_cli.modeling.parameter_counts counts them. docs/BASELINES.md holds
the output:

    python scripts/count_params.py            # a markdown table
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from pasta_cli.methods import apply_method
from pasta_cli.modeling import parameter_counts

# bert-large-cased and roberta-large as published (their config.json), GLUE's 2-class head
LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, num_labels=2)
BACKBONES = {
    "BERT-large": (BertForSequenceClassification, BertConfig(vocab_size=28996, **LARGE), "bert"),
    "RoBERTa-large": (RobertaForSequenceClassification,
                      RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                    **LARGE), "roberta"),
}
METHODS = {  # settings as the recipes give them (paper.yaml recipes)
    "PASTA (pairs)": ({"name": "pasta", "variant": "full"}, True),
    "PASTA (single sentences)": ({"name": "pasta", "variant": "full"}, False),
    "classifier only": ({"name": "pasta", "variant": "classifier_only"}, True),
    "full fine-tuning": ({"name": "full_ft"}, True),
    "BitFit": ({"name": "bitfit"}, True),
    "LoRA (r 8, query/value)": ({"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0}, True),
    "P-tuning v2 (length 20)": ({"name": "prefix", "length": 20, "dropout": 0.1}, True),
    "Adapter (size 64)": ({"name": "adapter", "size": 64}, True),
    "Diff-Prune (0.5%)": ({"name": "diff_prune", "sparsity": 0.005}, True),
    # today's tiny-budget methods, each with its recipe's settings (paper.yaml recipes)
    "(IA)^3 (k, v, FFN)": ({"name": "ia3"}, True),
    "VeRA (query/value)": ({"name": "vera"}, True),
    "LN-tuning": ({"name": "ln_tuning"}, True),
    "TrainableTokens ([CLS], [SEP] rows)": ({"name": "trainable_tokens"}, True),
    "RoAd (query/value)": ({"name": "road"}, True),
    "FourierFT (query/value)": ({"name": "fourierft"}, True),
    "LoReFT (rank 1, every layer)": ({"name": "loreft"}, True),
}


class _Tokenizer:
    """What PASTA asks a tokenizer: how many special tokens it inserts, and their ids."""

    def __init__(self, family: str):
        self.pair_slots, self.ids = (3, (101, 102)) if family == "bert" else (4, (0, 2))

    def num_special_tokens_to_add(self, pair: bool) -> int:
        return self.pair_slots if pair else 2

    def __call__(self, a, b, return_special_tokens_mask=True):
        return {"input_ids": [self.ids[0], 5, self.ids[1], 6, self.ids[1]], "special_tokens_mask": [1, 0, 1, 0, 1]}


def main() -> None:
    print("| method | backbone | method's parameters (no head) | % of backbone | head | everything trained "
          "| % of backbone |")
    print("|---|---|---|---|---|---|---|")
    for method, (settings, pair) in METHODS.items():
        for backbone, (cls, config, family) in BACKBONES.items():
            with torch.device("meta"):
                model = apply_method(cls(config), _Tokenizer(family), settings, pair)
            c = parameter_counts(model)
            print(f"| {method} | {backbone} | {c['method']:,} | {c['method_pct']:.4f}% | {c['head']:,} "
                  f"| {c['trainable']:,} | {c['trainable_pct']:.4f}% |")
    for backbone, (cls, config, _) in BACKBONES.items():
        with torch.device("meta"):
            print(f"\n{backbone} backbone: {parameter_counts(cls(config))['backbone']:,} parameters")


if __name__ == "__main__":
    main()

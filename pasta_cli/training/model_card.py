"""adapter/README.md: a Hugging Face Hub model card for every run's adapter, written at the end of the run.

The Hub's YAML metadata (library_name, base_model, pipeline_tag, datasets, metrics, tags and a model-index
with the run's dev scores), built with huggingface_hub's ModelCardData so the Hub and `ModelCard.load` read it
back; then how to load the adapter with pasta-cli, the training settings, the versions it ran with
(results.json's manifest) and the paper's citation. Nothing here uploads anything.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from omegaconf import OmegaConf

from pasta_cli.files import write_atomic
from pasta_cli.run_folder import CARD

HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}  # packaged backbones (backbones.PACKAGED)
PIPELINES = {"classification": "text-classification", "regression": "text-classification",
             "token_classification": "token-classification"}
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
CITATION = """@inproceedings{yang-etal-2023-parameter,
    title = "Parameter-Efficient Tuning with Special Token Adaptation",
    author = "Yang, Xiaocong and Huang, James Y. and Zhou, Wenxuan and Chen, Muhao",
    booktitle = "Proceedings of the 17th Conference of the European Chapter of the Association for
                 Computational Linguistics",
    year = "2023",
    publisher = "Association for Computational Linguistics",
}"""
PASTA_TEXT = (" PASTA (Parameter-efficient tuning with Special Token Adaptation) trains one vector per layer for each "
              "special token and nothing else of the encoder.")
SETTINGS = (("method", "method"), ("variant", "variant"), ("recipe", "recipe"), ("seed", "seed"),
            ("learning rate", "lr"), ("epochs", "epochs"), ("steps", "steps"), ("best step", "best_step"),
            ("effective batch size", "effective_batch_size"), ("precision", "precision"),
            ("model selection", "selection"), ("trainable (method)", "trainable_method"),
            ("trainable (with the head)", "trainable"), ("trainable %", "trainable_pct"))


def base_model(name_or_path: str) -> str | None:
    """The backbone as a Hub id (the packaged MiniLM by its Hub name); None for a local folder."""
    name = HUB_IDS.get(name_or_path, name_or_path)
    return name if HUB_ID.match(name) and not Path(name).exists() else None


def shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def card_data(cfg, record: dict) -> ModelCardData:
    """The Hub metadata: the run's scores on its first evaluation split as the model-index."""
    hub = OmegaConf.select(cfg, "task.hub")
    kind = OmegaConf.select(cfg, "task.kind") or "classification"
    split, scores = next(iter((record.get("best_scores") or {}).items()), (None, {}))
    dataset = hub.path if hub else f"pasta-cli/{record['task']}"
    name = f"{record['task']}-{record['model']}-{record['method']}" + (f"-{v}" if (v := record.get("variant")) else "")
    results = [EvalResult(task_type=PIPELINES[kind], dataset_type=dataset, dataset_name=record["task"],
                          dataset_config=hub.name if hub else None, dataset_split=split, metric_type=metric,
                          metric_value=value) for metric, value in scores.items() if value is not None]
    tags = ["pasta", "pasta-cli", "peft", "parameter-efficient-tuning", record["method"], record["task"]]
    return ModelCardData(library_name="pasta-cli", base_model=base_model(record["backbone"]),
                         pipeline_tag=PIPELINES[kind], datasets=[hub.path] if hub else None,
                         metrics=list(scores) or None, tags=list(dict.fromkeys(tags)), model_name=name,
                         eval_results=results or None)


def card_text(cfg, record: dict) -> str:
    """The card: metadata, then what it is, how to load it, how it trained, what it ran with, the citation."""
    data = card_data(cfg, record)
    split, scores = next(iter((record.get("best_scores") or {}).items()), ("dev", {}))
    rows = "\n".join(f"| {k} | {shown(record.get(key))} |" for k, key in SETTINGS if record.get(key) is not None)
    versions = ", ".join(f"{k} {v}" for k, v in (record.get("manifest") or {}).items() if v is not None)
    score_text = ", ".join(f"{k} {100 * v:.2f}" for k, v in scores.items() if v is not None) or "none recorded"
    body = f"""
# {data.model_name}

A {record['method']} adapter for `{data.base_model or record['backbone']}` on the task `{record['task']}`, trained
with [pasta-cli](https://pypi.org/project/pasta-cli/): only the adapter's tensors trained, the backbone stayed
frozen.{PASTA_TEXT if record['method'] == 'pasta' else ''}

Scores on `{split}` (x100, the best evaluation, {record.get('selection')} selection): {score_text}.

## Load it with pasta-cli

```bash
pip install pasta-cli
pasta-predict --adapter {record['task']}=path/to/adapter --input {record['task']}=rows.tsv --output preds/
pasta-serve --adapter {record['task']}=path/to/adapter
```

```python
from pasta_cli.adapter import load_adapter
model, tokenizer = load_adapter("path/to/adapter")   # the frozen backbone named inside, with this adapter on it
```

## Training settings

| setting | value |
|---|---|
{rows}

Ran with: {versions or 'no manifest recorded'}.

## Citation

```bibtex
{CITATION}
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def write_card(adapter_dir: Path, cfg, record: dict) -> Path:
    """adapter/README.md, atomically (it replaces the card PEFT writes for LoRA's adapter)."""
    return write_atomic(Path(adapter_dir) / CARD, card_text(cfg, record))

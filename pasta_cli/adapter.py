"""PASTA adapter files, PEFT-style: a task is a few KB that loads onto a fresh frozen backbone.

    adapter/adapter_config.json        what to rebuild: backbone, variant, shapes, head, labels, task
    adapter/adapter_model.safetensors  `pasta_vectors` (num_layers, num_vectors, hidden) + the head's
                                       tensors under their Hugging Face names (classifier.weight, ...)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pasta_cli.errors import PastaError
from pasta_cli.pasta import add_pasta, head_parameters

FORMAT_VERSION = 1
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def _atomic_dir_write(directory: Path, files: dict[str, callable]) -> None:
    """Write every file to a temp name beside it, then rename: a crash leaves no half-written file."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, write in files.items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        os.close(fd)
        write(tmp)
        os.replace(tmp, directory / name)


def save_adapter(model, directory, backbone: str, head: str, pair: bool, task: str | None = None) -> Path:
    """Save the PASTA vectors and the task head (never the frozen backbone)."""
    pasta = model.pasta
    directory = Path(directory)
    tensors = {"pasta_vectors": pasta.vectors.detach().float().cpu().contiguous()}
    tensors.update({n: p.detach().float().cpu().contiguous() for n, p in head_parameters(model).items()})
    config = {
        "format_version": FORMAT_VERSION,
        "method": "pasta",
        "backbone": backbone,
        "model_type": model.config.model_type,
        "variant": pasta.variant,
        "num_layers": pasta.num_layers,
        "num_slots": pasta.num_slots,
        "num_vectors": pasta.num_vectors,
        "hidden_size": model.config.hidden_size,
        "slot_to_vector": pasta.slot_to_vector.tolist(),
        "dropout": pasta.dropout.p,
        "pair": pair,
        "head": head,
        "num_labels": model.config.num_labels,
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
        "task": task,
    }
    _atomic_dir_write(directory, {
        WEIGHTS_NAME: lambda path: save_file(tensors, path, metadata={"format": "pt"}),
        CONFIG_NAME: lambda path: Path(path).write_text(json.dumps(config, indent=2) + "\n"),
    })
    return directory


def read_adapter_config(directory) -> dict:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise PastaError(f"no {CONFIG_NAME} in '{directory}': expected a folder written by save_adapter")
    config = json.loads(path.read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise PastaError(f"{path} has format_version {config.get('format_version')}; this pasta-cli reads {FORMAT_VERSION}")
    return config


def load_adapter_weights(model, directory) -> None:
    """Copy a saved adapter's vectors and head into a model that already has PASTA of the same shape."""
    config = read_adapter_config(directory)
    depth, hidden = len(model.pasta.vectors), model.config.hidden_size
    if (config["num_layers"], config["hidden_size"]) != (depth, hidden):
        raise PastaError(
            f"adapter in '{directory}' was trained on a backbone with {config['num_layers']} layers and hidden "
            f"size {config['hidden_size']}; this backbone has {depth} layers and hidden size {hidden}: "
            f"load it onto {config['backbone']}"
        )
    tensors = load_file(str(Path(directory) / WEIGHTS_NAME))
    vectors = tensors.pop("pasta_vectors")
    if vectors.shape != model.pasta.vectors.shape:
        raise PastaError(f"pasta_vectors has shape {tuple(vectors.shape)}, the model expects "
                         f"{tuple(model.pasta.vectors.shape)} (variant {model.pasta.variant})")
    with torch.no_grad():
        model.pasta.vectors.copy_(vectors)
        head = head_parameters(model)
        missing = set(head) - set(tensors)
        if missing:
            raise PastaError(f"adapter in '{directory}' lacks head tensors {sorted(missing)}")
        for name, value in tensors.items():
            if name not in head or head[name].shape != value.shape:
                raise PastaError(f"adapter tensor '{name}' {tuple(value.shape)} does not fit this model's head")
            head[name].copy_(value)


def load_adapter(directory, backbone: str | None = None):
    """Rebuild (model, tokenizer) from an adapter folder onto a fresh backbone; one call."""
    from pasta_cli.backbones import load_model, load_tokenizer

    config = read_adapter_config(directory)
    name = backbone or config["backbone"]
    tokenizer = load_tokenizer(name, pretokenized=config["head"] == "token_classification")
    model = load_model(name, config["head"], config["num_labels"], config.get("id2label"))
    if model.config.model_type != config["model_type"] and backbone is None:
        raise PastaError(f"backbone '{name}' is a {model.config.model_type}, the adapter needs a {config['model_type']}")
    add_pasta(model, tokenizer, config["variant"], pair=config["pair"], dropout=config["dropout"])
    load_adapter_weights(model, directory)
    return model.eval(), tokenizer


def save_trainable(model, directory, method: str, backbone: str, task: str | None = None) -> Path:
    """A baseline's trained tensors (BitFit biases, LoRA matrices, prefixes, or all of full FT) + its head."""
    directory = Path(directory)
    tensors = {n: p.detach().float().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    config = {"format_version": FORMAT_VERSION, "method": method, "backbone": backbone, "task": task,
              "tensors": len(tensors), "parameters": sum(t.numel() for t in tensors.values())}
    _atomic_dir_write(directory, {
        WEIGHTS_NAME: lambda path: save_file(tensors, path, metadata={"format": "pt"}),
        CONFIG_NAME: lambda path: Path(path).write_text(json.dumps(config, indent=2) + "\n"),
    })
    return directory

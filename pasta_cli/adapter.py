"""One adapter format for every method: a task is a small folder that loads onto a fresh frozen
backbone with one call, PEFT-style.

    adapter/adapter_config.json        what to rebuild: format_version, method and its settings,
                                       backbone, head, labels, pair, task (PASTA: variant, shapes, slots);
                                       what inference needs to read and cut inputs as the run did:
                                       max_length, task_spec (columns, labels, kind), tokenizer (policy)
    adapter/adapter_model.safetensors  the tensors the method trained, under their Hugging Face names
                                       (PASTA: `pasta_vectors` (layers, vectors, hidden) + the head)

The PEFT methods' adapter/ (LoRA, (IA)^3, VeRA, LN-tuning, TrainableTokens, RoAd, FourierFT) is PEFT's own format
(its adapter_config.json and adapter_model.safetensors, which `PeftModel.from_pretrained` loads), plus
`pasta_config.json` with the keys above, which PEFT ignores.

PASTA's adapter_config.json also carries PEFT's keys (`peft_type: PASTA`, `task_type`, `base_model_name_or_path`,
`modules_to_save`, `slot_token_ids`): the same folder loads with `PeftModel.from_pretrained` once `pasta_cli.peft`
is imported, and a folder PEFT saves for PASTA loads here (pasta_cli/peft/config.py says how).

`inference_settings` is the one reader of the inference keys (pasta-predict, pasta-serve,
MultiTaskPasta and load_adapter all call it), so a copied adapter/ folder, away from its run, reads
and truncates its inputs exactly as the run did. An adapter written before these keys existed falls
back to its run's config.yaml beside the folder, as before.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from functools import cache
from pathlib import Path

from omegaconf import OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pasta_cli.backbones import load_model, load_tokenizer
from pasta_cli.baselines.peft_tuners import load_peft
from pasta_cli.errors import PastaError
from pasta_cli.files import file_mode, write_atomic, write_error, write_json
from pasta_cli.methods import get_method
from pasta_cli.modeling import encoder_layers, hf_model
from pasta_cli.run_folder import CONFIG as RUN_CONFIG
from pasta_cli.run_folder import read_config

FORMAT_VERSION = 1
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # user/name or org/name: a Hugging Face Hub repository
SIDECAR_NAME = "pasta_config.json"  # our keys where adapter_config.json is another library's (PEFT)


def tokenizer_policy(head: str) -> dict:
    """How the runner tokenizes (pasta_cli.data.encode and backbones.load_tokenizer): text that merely looks
    like a special token stays text, word lists for token tasks, the longest text cut first at max_length."""
    return {"split_special_tokens": True, "pretokenized": head == "token_classification",
            "truncation": "longest_first"}


def save_adapter(model, directory, backbone: str, head: str, pair: bool, task: str | None = None,
                 method: str = "pasta", settings: dict | None = None, max_length: int | None = None,
                 task_spec: dict | None = None) -> Path:
    """Save what `method` trained and the task head (never the frozen backbone) to `directory`.

    `head`: classification | regression | token_classification; `pair`: whether the task feeds
    sentence pairs; `settings`: the method's config (the run's `method`), for the keys that rebuild it;
    `max_length`, `task_spec`: where inputs were truncated and how the task's files are read (the run's
    trainer.max_length and resolved task spec), for inference away from the run folder.
    """
    m = get_method(method)
    inner = hf_model(model)
    directory = Path(directory)
    config = {
        "format_version": FORMAT_VERSION, "method": m.name, "backbone": backbone,
        "model_type": inner.config.model_type, "num_layers": len(encoder_layers(inner)),
        "hidden_size": inner.config.hidden_size, **m.describe(model, dict(settings or {})),
        "pair": pair, "head": head, "num_labels": inner.config.num_labels,
        "id2label": {str(k): v for k, v in inner.config.id2label.items()}, "task": task,
        "max_length": max_length, "task_spec": task_spec, "tokenizer": tokenizer_policy(head),
    }
    if m.name == "pasta":  # PEFT's keys too: PeftModel.from_pretrained loads the same folder (pasta_cli.peft)
        from pasta_cli.peft import head_modules, peft_keys  # PEFT is imported only where it is used, as LoRA's

        config.update(peft_keys(inner.pasta.slot_token_ids.tolist(), head, backbone, head_modules(inner)))
    if m.peft:
        # PEFT writes its own files; written beside the folder first and renamed in one by one, so a crash
        # mid-save leaves each file whole (the previous version or the new one)
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory.parent, prefix=f".{directory.name}.") as tmp:
            try:
                model.save_pretrained(tmp)
                for written in Path(tmp).iterdir():
                    os.chmod(written, file_mode())  # PEFT's safetensors files come 0600: the umask's mode, as ours
                    os.replace(written, directory / written.name)
            except OSError as e:
                raise write_error(directory, e) from e
        write_json(directory / SIDECAR_NAME, config)
        return directory
    # floats as fp32; integer tensors (Diff-Prune's indices) as they are: fp32 would round indices past 2**24
    tensors = {n: (t.float() if t.is_floating_point() else t).cpu().contiguous() for n, t in m.state(model).items()}
    write_atomic(directory / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    write_json(directory / CONFIG_NAME, config)
    return directory


class HubUnreachable(PastaError):
    """The Hub could not be reached for an adapter it holds (the network, a token): the machine's fault (exit 1)."""

    exit_code = 1


def adapter_folder(ref) -> Path:
    """An adapter's folder: `ref` itself where it is a path here; otherwise a Hub repository id (`user/name`, as
    `pasta-push` uploads a run's adapter/) resolved through the Hub cache: downloaded once, then read from the
    cache, and with HF_HUB_OFFLINE=1 only from the cache. Every reader below starts here."""
    path = Path(ref).expanduser()
    if path.exists() or not HUB_ID.fullmatch(str(ref)):
        return path
    return _from_hub(str(ref))


@cache
def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # noqa: BLE001 - not cached offline, no such repository, no network: one line each
        reason = (str(e).splitlines() or [""])[0]
        if constants.HF_HUB_OFFLINE:
            raise PastaError(f"adapter '{repo_id}' is not a folder here and not in the Hub cache, and HF_HUB_OFFLINE=1 "
                             "forbids downloading it: download it once with the Hub reachable, or give its local "
                             "folder") from None
        if type(e).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError"):
            raise PastaError(f"adapter '{repo_id}' is not a folder here nor a Hub repository you can read: check "
                             "the id (and your token for a private one)") from None
        raise HubUnreachable(f"cannot fetch adapter '{repo_id}' from the Hub ({type(e).__name__}: {reason}): check "
                             "the network, or give the adapter's local folder") from None


def read_adapter_config(directory) -> dict:
    """Our keys of an adapter folder (from pasta_config.json where adapter_config.json is PEFT's)."""
    directory = adapter_folder(directory)
    path = directory / SIDECAR_NAME if (directory / SIDECAR_NAME).is_file() else directory / CONFIG_NAME
    if not path.is_file():
        raise PastaError(f"no {CONFIG_NAME} in '{directory}': expected a folder written by save_adapter "
                         "(a run's adapter/ folder)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PastaError(f"'{path}' is not valid JSON ({e}): the adapter folder is damaged") from None
    if config.get("format_version") != FORMAT_VERSION or "method" not in config:
        raise PastaError(f"'{path}' has format_version {config.get('format_version')}; this pasta-cli reads "
                         f"{FORMAT_VERSION} (written by save_adapter)")
    return config


def inference_settings(directory) -> dict:
    """{"max_length", "task_spec", "tokenizer"}: how the adapter's inputs are read and cut, from its own
    config; for an adapter saved before it held them, from its run's config.yaml beside the folder. A value
    neither gives is None (max_length: the backbone's limit; task_spec: the caller must name the columns)."""
    directory = adapter_folder(directory)
    config = read_adapter_config(directory)
    settings = {"max_length": config.get("max_length"), "task_spec": config.get("task_spec"),
                "tokenizer": config.get("tokenizer") or tokenizer_policy(config["head"])}
    ours = tokenizer_policy(config["head"])
    if settings["tokenizer"] != ours:  # every reader refuses what it would tokenize otherwise than training did
        raise PastaError(f"adapter in '{directory}' was trained with tokenizer policy {settings['tokenizer']}; this "
                         f"pasta-cli tokenizes with {ours}: use the pasta-cli version that trained it")
    if settings["max_length"] is None or settings["task_spec"] is None:
        run = _run_config(directory)
        if run is not None:
            settings["max_length"] = settings["max_length"] or OmegaConf.select(run, "trainer.max_length")
            if settings["task_spec"] is None and "task" in run:
                settings["task_spec"] = OmegaConf.to_container(run.task, resolve=True)
    return settings


def _run_config(directory):
    """The run's config.yaml beside an adapter folder (None for an adapter saved by hand)."""
    path = Path(directory).parent / RUN_CONFIG
    if not path.is_file():
        return None
    return read_config(path)


def read_weights(directory) -> dict:
    """The tensors of an adapter folder (adapter_model.safetensors), or one line saying it is damaged."""
    path = adapter_folder(directory) / WEIGHTS_NAME
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise PastaError(f"cannot read '{path}' ({type(e).__name__}: {e}): the adapter folder is damaged "
                         "or incomplete") from None


def _check_shape(config: dict, model, directory) -> None:
    depth, hidden = len(encoder_layers(model)), model.config.hidden_size
    if (config["num_layers"], config["hidden_size"]) != (depth, hidden):
        raise PastaError(
            f"adapter in '{directory}' was trained on a backbone with {config['num_layers']} layers and hidden "
            f"size {config['hidden_size']}; this backbone has {depth} layers and hidden size {hidden}: "
            f"load it onto {config['backbone']}"
        )


def load_adapter(directory, backbone: str | None = None, attn_implementation: str | None = "sdpa"):
    """Rebuild (model, tokenizer) from an adapter folder onto a fresh backbone; one call for every method.

    `backbone`: load onto this hub id or folder instead of the one the adapter names (same shape required).
    `attn_implementation`: "eager" where attention weights are wanted (pasta-analyze heads).
    The tokenizer's model_max_length is the run's max_length (`inference_settings`), so
    `tokenizer(..., truncation=True)` cuts inputs where training did. `directory` may be a Hub repository id
    (`adapter_folder`).
    """
    directory = adapter_folder(directory)
    config = read_adapter_config(directory)
    method = get_method(config["method"])
    name = backbone or config["backbone"]
    head = config["head"]
    inference = inference_settings(directory)
    tokenizer = load_tokenizer(name, pretokenized=inference["tokenizer"]["pretokenized"])
    if inference["max_length"]:  # tokenizer(..., truncation=True) cuts where the run did
        tokenizer.model_max_length = inference["max_length"]
    model = load_model(name, head, config["num_labels"], config.get("id2label"), attn_implementation)
    if model.config.model_type != config["model_type"] and backbone is None:
        raise PastaError(f"backbone '{name}' is a {model.config.model_type}, "
                         f"the adapter needs a {config['model_type']}")
    _check_shape(config, model, directory)
    if method.peft:
        return load_peft(model, directory), tokenizer
    model = method.apply(model, tokenizer, method.typed(config), config["pair"])
    rebuilt = method.describe(model, config)  # e.g. PASTA's slots on this tokenizer vs the adapter's
    differ = {k: (config[k], v) for k, v in rebuilt.items() if k in config and config[k] != v}
    if differ:
        raise PastaError(f"adapter in '{directory}' does not fit backbone '{name}': "
                         + "; ".join(f"{k} {a} in the adapter, {b} here" for k, (a, b) in differ.items()))
    method.load_state(model, read_weights(directory), str(directory))
    return model.eval(), tokenizer

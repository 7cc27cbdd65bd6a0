"""What every analysis looks at: a backbone, with or without a trained PASTA adapter, and the inputs fed to it
(a seeded sample of a task split, or one sentence or pair given on the command line), in padded batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from pasta_cli.adapter import load_adapter, read_adapter_config
from pasta_cli.backbones import load_model, load_tokenizer
from pasta_cli.config import compose
from pasta_cli.data import Collator, TaskSpec, as_spec, encode, load_task
from pasta_cli.data.encode import MODEL_KEYS
from pasta_cli.errors import PastaError
from pasta_cli.pasta import PastaInjector, count_slots
from pasta_cli.run_folder import CONFIG as RUN_CONFIG
from pasta_cli.run_folder import find_adapter, read_config


@dataclass
class Subject:
    """A loaded model and what the analyses need to know about it."""

    model: torch.nn.Module
    tokenizer: object
    backbone: str
    pair: bool | None = None              # the adapter's input form; None for a bare backbone
    injector: PastaInjector | None = None  # the adapter's vectors (model.pasta); None for a bare backbone
    adapter: Path | None = None


def load_pasta_adapter(path, backbone: str | None = None, eager: bool = False) -> tuple[Subject, Path | None]:
    """(the adapter on its backbone, the run folder it came from or None). Only the attention analysis asks
    for eager attention (`eager`): SDPA computes the same outputs faster but returns no attention weights."""
    adapter, run_dir = find_adapter(path)
    config = read_adapter_config(adapter)
    if config["method"] != "pasta" or config.get("num_vectors", 0) == 0:
        what = config["method"] if config["method"] != "pasta" else f"pasta ({config.get('variant')}, no vectors)"
        raise PastaError(f"adapter in '{adapter}' was trained with method {what}: pasta-analyze reads PASTA "
                         "adapters with vectors (method=pasta, any variant but classifier_only)")
    model, tokenizer = load_adapter(adapter, backbone, attn_implementation="eager" if eager else "sdpa")
    return Subject(model, tokenizer, backbone or config["backbone"], config["pair"], model.pasta, adapter), run_dir


def load_backbone(name: str, eager: bool = False) -> Subject:
    """The frozen backbone alone (its untrained head is never read by the attention analysis)."""
    model = load_model(name, "classification", 2, attn_implementation="eager" if eager else "sdpa")
    return Subject(model.eval(), load_tokenizer(name), name)


def load_split(spec: TaskSpec, split: str | None, samples: int | None):
    """The task with only `split` (default: its first evaluation split), cut to a seeded sample of `samples`
    rows by the task's own sampling (task.sample_seed), so the same command sees the same rows."""
    split = split or spec.eval_splits[0]
    limit = "max_train_samples" if split == "train" else (
        "max_eval_samples" if split in spec.eval_splits else "max_test_samples")
    task = load_task(dataclasses.replace(spec, **{limit: samples}))
    if split not in task.splits:
        raise PastaError(f"task {task.name} has no split '{split}': choose one of {', '.join(task.splits)}")
    task.splits = {split: task.splits[split]}  # tokenize this split only
    return task, split


def task_batches(task, tokenizer, batch_size: int, max_length: int) -> Iterator[dict]:
    """Padded batches of the task's one split: input_ids, attention_mask, special_tokens_mask, labels...

    Shortest inputs first: every number the analyses report is a sum over inputs, so the order does not
    change them, and batches of similar length pad little (RTE: about half the attention computed otherwise
    is on padding). The first input, drawn in the Figure 5 grid, is then the sample's shortest.
    """
    (rows,) = encode(task, tokenizer, max_length).values()
    order = np.argsort([len(ids) for ids in rows["input_ids"]], kind="stable").tolist()
    collate = Collator(task, tokenizer)
    for start in range(0, len(order), batch_size):
        yield collate([rows[i] for i in order[start:start + batch_size]])


def sentence_batch(tokenizer, texts: list[str], max_length: int) -> dict:
    """One input (a sentence, or a pair of two) as a batch of one."""
    if not 1 <= len(texts) <= 2:
        raise PastaError(f"--sentence takes one text or two (a pair), got {len(texts)}")
    enc = tokenizer(*texts, truncation=True, max_length=max_length, return_special_tokens_mask=True,
                    return_tensors="pt")
    return {k: v for k, v in enc.items() if k in MODEL_KEYS}


def forward(subject: Subject, batch: dict, **kwargs):
    """The model's output on a batch (labels left out; special_tokens_mask only where PASTA reads it)."""
    inputs = {k: v for k, v in batch.items() if k in MODEL_KEYS and k != "labels"}
    if subject.injector is None:
        inputs.pop("special_tokens_mask", None)
    with torch.inference_mode():
        return subject.model(**inputs, **kwargs)


@contextmanager
def vectors_kept(injector: PastaInjector, keep):
    """The adapter with the vectors of the layers where `keep` is False set to zero, restored on exit.

    Zero vectors add nothing (h + 0 = h), so keeping no layer is the frozen backbone with the adapter's head.
    """
    keep = torch.as_tensor(keep, dtype=torch.bool)
    if keep.shape != (injector.num_layers,):
        raise ValueError(f"keep has shape {tuple(keep.shape)}, expected ({injector.num_layers},)")
    saved = injector.vectors.detach().clone()
    with torch.no_grad():
        injector.vectors[~keep] = 0
    try:
        yield injector
    finally:
        with torch.no_grad():
            injector.vectors.copy_(saved)


def resolve_inputs(overrides: list[str], run_dir: Path | None) -> tuple[TaskSpec, int, str]:
    """(task spec, max_length, backbone) the analysis uses. From a run folder: its config.yaml, with the
    overrides as dotted keys on it (task.data_dir=... where the data moved); else pasta-train's config
    composed with the overrides (task=rte task.data_dir=... model=minilm)."""
    if run_dir is not None:
        not_dotted = [o for o in overrides if "=" not in o or "." not in o.split("=", 1)[0]]
        if not_dotted:
            raise PastaError(f"with a run folder, overrides are dotted keys on its config.yaml (task.data_dir=..., "
                             f"trainer.max_length=...), got {' '.join(not_dotted)}")
        cfg = OmegaConf.merge(read_config(run_dir / RUN_CONFIG), OmegaConf.from_dotlist(overrides))
    else:
        cfg = compose(overrides)
    return as_spec(cfg.task), int(cfg.trainer.max_length), str(cfg.model.name_or_path)


def inputs_for(subject: Subject, spec: TaskSpec, sentence: list[str] | None, split: str | None, samples: int | None,
               batch_size: int, max_length: int) -> tuple[Iterable[dict], int, dict]:
    """(batches, number of special-token slots per input, a description for the record): the sentence (or
    pair) given on the command line, else a seeded sample of the task's split."""
    if sentence:
        if subject.pair is not None and subject.pair != (len(sentence) == 2):
            raise PastaError(f"the adapter was trained on {'sentence pairs' if subject.pair else 'single sentences'}: "
                             + ("give --sentence and --sentence2" if subject.pair else "give --sentence alone"))
        batch = sentence_batch(subject.tokenizer, sentence, max_length)
        return [batch], count_slots(subject.tokenizer, len(sentence) == 2), {
            "what": " / ".join(f'"{s}"' for s in sentence), "sentence": sentence}
    task, split = load_split(spec, split, samples)
    return task_batches(task, subject.tokenizer, batch_size, max_length), count_slots(subject.tokenizer, task.pair), {
        "what": f"{task.name} {split}" + (f" (seeded sample of {samples})" if samples else ""),
        "task": task.name, "split": split, "samples": samples}

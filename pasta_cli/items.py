"""What MultiTaskPasta reads and says, apart from the model: an item ({"task": name, "text": [...]} or, for a
token task, {"task": name, "tokens": [...]}) checked into (task, texts) with one line naming a bad one, a
task's allowed name, and a prediction as a user reads it. pasta-predict (each file row) and pasta-serve (each
request item) check their inputs here before any model runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pasta_cli.errors import PastaError, short

if TYPE_CHECKING:
    import torch

    from pasta_cli.multitask import Task

TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # it names files (preds/<task>.jsonl) and URLs


def parse_item(where: str, item, tasks: Mapping[str, Task]) -> tuple[Task, list]:
    """One item's (task, texts), or one line naming the item (`where`: "item 3", a file's line) and what
    would be right."""
    if not isinstance(item, Mapping):
        raise PastaError(f"{where}: expected an object {{\"task\": ..., \"text\": [...]}}, got {type(item).__name__}")
    name = item.get("task")
    if not isinstance(name, str) or name not in tasks:
        raise PastaError(f"{where}: unknown task {name!r}: the tasks are {', '.join(sorted(tasks)) or 'none'}")
    task = tasks[name]
    if task.head == "token_classification":
        tokens = item.get("tokens")
        if not (isinstance(tokens, list) and tokens and all(isinstance(t, str) and t.strip() for t in tokens)):
            raise PastaError(f"{where}: task '{name}' tags words: give \"tokens\": a non-empty list of words, "
                             f"got {short(tokens)}")
        return task, _unicode(where, tokens)
    text = item.get("text")
    text = [text] if isinstance(text, str) else text
    want = 2 if task.pair else 1
    if not (isinstance(text, list) and len(text) == want and all(isinstance(t, str) for t in text)):
        shape = "[first, second] (a sentence pair)" if task.pair else "[text] or a string (one sentence)"
        raise PastaError(f"{where}: task '{name}' takes \"text\": {shape}, got {short(text)}")
    return task, _unicode(where, text)


def _unicode(where: str, texts: list[str]) -> list[str]:
    """The texts, if all are Unicode a tokenizer can take: a lone UTF-16 surrogate ("\\ud83d" in JSON) is not."""
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError as e:
        raise PastaError(f"{where}: text holds a lone surrogate {e.object[e.start]!r}, which is not a Unicode "
                         "character: send valid text (both halves of a surrogate pair)") from None
    return texts


def prediction(task: Task, logits: torch.Tensor, row: dict) -> dict:
    """What a user reads: a label with its probabilities, a score, or one tag per word (None for a
    word cut off at the task's max_length)."""
    if task.head == "regression":
        return {"score": float(logits[0])}
    if task.head == "token_classification":
        ids = logits.argmax(-1).tolist()
        starts = row["word_starts"]
        return {"tags": [task.labels[ids[p]] if p is not None else None for p in starts]}
    probs = logits.softmax(-1).tolist()
    return {"label": task.labels[int(logits.argmax())], "probabilities": dict(zip(task.labels, probs))}

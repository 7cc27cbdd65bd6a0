"""Many PASTA tasks on one frozen backbone, in one forward pass.

PASTA's vectors are added per row, so rows of different tasks can share a batch: every task's
vectors sit in one table (layers, all tasks' vectors, hidden), and each row's slot-to-vector map
points into its own task's range. The injection is the training path's (`pasta.slot_positions`,
then `table[layer, vector]` added at the slots) with one extra index: the row's task picks its map.
Rows of pair tasks (3 BERT slots) and single-sentence tasks (2) mix; a row beyond its own slot
count gets no vector. After the one backbone pass, each task's head reads its own rows.

A head is the task's own Hugging Face model class (sequence or token classification) whose backbone
is replaced by a stand-in that returns the shared pass's outputs for the task's rows, so every
family's head (BERT's pooler + classifier, RoBERTa's dense + out_proj, DeBERTa's context pooler)
runs exactly as its single-task model runs it. Heads are built on the meta device and take the
adapter's tensors by assignment: adding or removing a task copies a few KB, never the backbone.

Serving precision (`precision`, pasta_cli.precision.SERVING_PRECISIONS): the frozen encoder alone changes
format (bf16 storage under bf16 autocast, or int8 dynamically quantized Linear layers); the table of vectors
and the heads stay fp32, the heads reading the shared pass's hidden states cast to fp32.

Adding a task appends its vectors to the table (whose capacity doubles when full) and its map as one row:
adding N tasks costs O(N) copies in all, not a rebuild of the whole table per add. Removing or replacing a
task leaves a hole, compacted once the holes outnumber the live vectors. A task's `vectors` is then a view
into the table (held once in memory), re-pointed when the table moves.

Only PASTA adapters (every variant, classifier_only included) can share a batch: the other methods
change the backbone's own weights (BitFit, LoRA) or its attention (prefixes), which all rows share.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pasta_cli.adapter import inference_settings, read_adapter_config, read_weights
from pasta_cli.backbones import HEADS, load_config, load_model, load_tokenizer, max_length_limit, resolve
from pasta_cli.errors import PastaError
from pasta_cli.items import TASK_NAME, parse_item, prediction
from pasta_cli.modeling import encoder_layers, freeze
from pasta_cli.pasta import RowInjector as MixedInjector
from pasta_cli.pasta import attach, count_slots, stack_vectors, template_token_ids
from pasta_cli.precision import prepare_serving, resolve_serving


@dataclass(eq=False)  # a task is itself: hashed by identity, so a replaced task is told from its successor
class Task:
    """One loaded adapter: what its rows need (slots, labels, head) and where its vectors are."""

    name: str
    path: str
    head: str                   # classification | regression | token_classification
    pair: bool
    labels: list[str] | None    # class or tag names (None: regression)
    num_slots: int
    variant: str
    slot_to_vector: list[int]   # into the task's own vectors; -1: the slot has none
    vectors: torch.Tensor       # (layers, the task's vectors, hidden): once added, a view into the shared table
    model: nn.Module            # the head: the task's HF model class around a stand-in backbone
    max_length: int             # inputs are truncated there, as the task was trained

    def describe(self) -> dict:
        return {"task": self.name, "head": self.head, "pair": self.pair, "labels": self.labels,
                "num_slots": self.num_slots, "variant": self.variant, "max_length": self.max_length}


class SharedOutput(nn.Module):
    """Stands in for the backbone inside a task's head model: returns the shared pass's outputs for
    the task's rows (set just before the head runs)."""

    def __init__(self):
        super().__init__()
        self.output = None

    def forward(self, *args, **kwargs):
        return self.output


class MultiTaskPasta:
    """One frozen backbone, any number of PASTA tasks, mixed in every batch.

        mt = MultiTaskPasta("minilm")
        mt.add_adapter("rte", "outputs/runs/rte/.../adapter")
        mt.add_adapter("sst2", "outputs/runs/sst2/.../adapter")
        mt.predict([{"task": "rte", "text": ["A man is eating.", "Someone eats."]},
                    {"task": "sst2", "text": "a gem of a film"}])

    `backbone`: a hub id, a local folder or `minilm`; None takes the first adapter's (`from_adapters`).
    `precision`: auto | fp32 | bf16 | int8 | fp16 (pasta_cli.precision.resolve_serving); `self.precision` holds
    what it resolved to here.
    Thread-safe: adding or removing a task waits for the forward pass in flight.
    """

    def __init__(self, backbone: str, device: str = "cpu", precision: str = "auto"):
        self.device = torch.device(device)
        self.backbone, self.precision = backbone, resolve_serving(precision, self.device.type)
        self.config = load_config(backbone)
        self.tokenizer = load_tokenizer(backbone)
        self._word_tokenizer = None  # loaded with the first token-classification task
        # the sequence-classification model's backbone: BERT's keeps its pretrained pooler, which BERT heads read
        self.encoder = load_model(backbone, "classification", 2).base_model
        freeze(self.encoder, lambda name: False)
        self.encoder.eval().to(self.device)
        self._autocast = prepare_serving(self.encoder, self.precision)  # after .to(): int8 modules are CPU-only
        self.layers = len(encoder_layers(self.encoder))
        self.injector = MixedInjector(self.layers, self.config.hidden_size, template_token_ids(self.tokenizer))
        self.injector.to(self.device)
        attach(self.encoder, self.injector)
        self.tasks: dict[str, Task] = {}
        self._templates: dict[tuple, nn.Module] = {}        # (class, head options) -> an empty head on meta
        self._lock = threading.RLock()
        self._rebuild()

    @classmethod
    def from_adapters(cls, adapters: Mapping[str, str], backbone: str | None = None, **kwargs) -> MultiTaskPasta:
        """Load the backbone once (the first adapter's, unless given) and add every adapter."""
        if not adapters:
            raise PastaError("no adapter given: name at least one (name=path/to/adapter)")
        backbone = backbone or read_adapter_config(next(iter(adapters.values())))["backbone"]
        mt = cls(backbone, **kwargs)
        for name, path in adapters.items():
            mt.add_adapter(name, path)
        return mt

    # ------------------------------------------------------------------------------------ adapters

    def add_adapter(self, name: str, path, max_length: int | None = None) -> Task:
        """Load the adapter folder at `path` as task `name` (replacing a task of that name).

        `max_length`: truncate its inputs there; None: where its run did (`inference_settings`: the adapter's
        max_length, or its run's trainer.max_length), else the backbone's limit.
        """
        if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
            raise PastaError(f"task name {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
                             "starting with a letter or digit")
        config = read_adapter_config(path)
        self._check_fits(name, config, path)
        tensors = read_weights(path)
        vectors = tensors.pop("pasta_vectors", None)
        expected = (self.layers, config["num_vectors"], self.config.hidden_size)
        if vectors is None or tuple(vectors.shape) != expected:
            found = None if vectors is None else tuple(vectors.shape)
            raise PastaError(f"adapter '{name}' ({path}): pasta_vectors has shape {found}, its config says {expected}: "
                             "the adapter folder is damaged")
        limit = max_length_limit(self.config) or 512
        task = Task(name=name, path=str(path), head=config["head"], pair=config["pair"],
                    labels=None if config["head"] == "regression" else
                    [config["id2label"][str(i)] for i in range(config["num_labels"])],
                    num_slots=config["num_slots"], variant=config["variant"],
                    max_length=min(max_length or inference_settings(path)["max_length"] or limit, limit),
                    slot_to_vector=list(config["slot_to_vector"]), vectors=vectors.float(),
                    model=self._head(name, config, tensors, path))
        if task.head == "token_classification" and self._word_tokenizer is None:
            self._word_tokenizer = load_tokenizer(self.backbone, pretokenized=True)
        with self._lock:
            replaced = self.tasks.get(name)
            self.tasks[name] = task
            self._append(task, replaced)
        return task

    def remove_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self.tasks:
                raise PastaError(f"no task '{name}' to remove: the tasks are {', '.join(self.tasks) or 'none'}")
            task = self.tasks.pop(name)
            del self._index[name], self._offsets[name]
            self._dead += task.vectors.shape[1]
            self._dead_rows += 1
            self._compact_if_sparse()

    def _check_fits(self, name: str, config: dict, path) -> None:
        """Refuse, in one line, an adapter that cannot share this backbone's batches."""
        where = f"adapter '{name}' ({path})"
        if config["method"] != "pasta":
            raise PastaError(f"{where} is a {config['method']} adapter: only PASTA adapters share a mixed batch "
                             "(their vectors are added per row; other methods change weights every row shares); "
                             "load it alone with pasta_cli.load_adapter")
        ours = {"model_type": self.config.model_type, "num_layers": self.layers,
                "hidden_size": self.config.hidden_size}
        differ = [f"{k} {config[k]} in the adapter, {v} here" for k, v in ours.items() if config[k] != v]
        if differ:
            raise PastaError(f"{where} does not fit backbone '{self.backbone}': {'; '.join(differ)}")
        if not _same_backbone(config["backbone"], self.backbone):
            raise PastaError(f"{where} was trained on backbone '{config['backbone']}', this model's backbone is "
                             f"'{self.backbone}': serve it on its own backbone (--backbone {config['backbone']})")
        if config["head"] not in HEADS:
            raise PastaError(f"{where} has head '{config['head']}': expected one of {', '.join(HEADS)}")
        slots = count_slots(self.tokenizer, config["pair"])
        if config["num_slots"] != slots:
            raise PastaError(f"{where} has {config['num_slots']} slots, this tokenizer gives "
                             f"{'pairs' if config['pair'] else 'single sentences'} {slots}")

    def _head(self, name: str, config: dict, tensors: dict, path) -> nn.Module:
        """The task's HF model class around a stand-in backbone, its head tensors assigned from the adapter."""
        head = config["head"]
        labels = {int(k): v for k, v in config["id2label"].items()}
        options = {"num_labels": 1, "problem_type": "regression"} if head == "regression" else {
            "num_labels": config["num_labels"], "id2label": labels, "label2id": {v: k for k, v in labels.items()}}
        cls = AutoModelForTokenClassification if head == "token_classification" else AutoModelForSequenceClassification
        base = {k: v for k, v in self.config.to_dict().items() if k not in ("id2label", "label2id")}
        task_config = type(self.config).from_dict({**base, **options})
        key = (cls.__name__, head, 1 if head == "regression" else config["num_labels"])
        if key not in self._templates:  # built once per kind of head: building the model is most of an add's cost
            with torch.device("meta"):  # no weights are allocated: the backbone is replaced, the head assigned
                template = cls.from_config(task_config)
            setattr(template, template.base_model_prefix, SharedOutput())
            self._templates[key] = template
        template = self._templates[key]
        # the head's few modules, on meta; the task's config (its labels; the modules read only sizes, equal within
        # a key) stands for the template's wherever a module holds it, so that no copy of the template's is made
        model = copy.deepcopy(template, memo={id(template.config): task_config})
        expected = {n for n, _ in model.named_parameters()}
        if set(tensors) != expected:
            raise PastaError(f"adapter '{name}' ({path}) holds head tensors {sorted(tensors)}, the {head} head of "
                             f"this backbone has {sorted(expected)}: the adapter was made for another model")
        # cloned: safetensors' tensors share the file's one buffer, which a kept view would keep whole (vectors too)
        model.load_state_dict({k: v.clone() for k, v in tensors.items()}, strict=False, assign=True)
        return model.eval().to(self.device)

    def _rebuild(self) -> None:
        """One table of every task's vectors and each task's slot map into it (a few KB per task), compacted:
        no hole of a removed or replaced task. Called under the lock (or before any thread can see the model)."""
        tasks = list(self.tasks.values())
        table, maps = (stack_vectors([t.vectors for t in tasks], [t.slot_to_vector for t in tasks]) if tasks else
                       (torch.zeros(self.layers, 0, self.config.hidden_size), torch.tensor([[-1]])))
        self._table, self._maps = table.to(self.device), maps.to(self.device)  # (layers, capacity, hidden), (rows, P)
        self._used, self._rows = table.shape[1], len(tasks)      # vectors and map rows in use, holes included
        self._dead = self._dead_rows = 0                          # of which: holes left by removed or replaced tasks
        self._slots = torch.tensor([t.num_slots for t in tasks] or [0], device=self.device)
        self._index = {name: i for i, name in enumerate(self.tasks)}  # task name -> its row of _maps
        self._offsets: dict[str, int] = {}                        # task name -> its first vector in the table
        offset = 0
        for t in tasks:
            self._offsets[t.name] = offset
            offset += t.vectors.shape[1]
        self._repoint()

    def _repoint(self) -> None:
        """Every live task's `vectors` a view of its columns in the current table (one copy in memory)."""
        for t in self.tasks.values():
            t.vectors = self._table[:, self._offsets[t.name]:self._offsets[t.name] + t.vectors.shape[1]]
        self.injector.table = self._table[:, :self._used]

    def _append(self, task: Task, replaced: Task | None) -> None:
        """Add `task`'s vectors and map after the last ones, growing the table and the maps by doubling (amortised
        O(its size)); a task it replaces leaves a hole. Called under the lock: no forward pass is in flight."""
        n, used = task.vectors.shape[1], self._used
        moved = used + n > self._table.shape[1]
        if moved:  # torch.empty: the capacity not yet written takes no resident memory
            grown = self._table.new_empty(self.layers, max(used + n, 2 * self._table.shape[1]), self._table.shape[2])
            grown[:, :used] = self._table[:, :used]
            self._table = grown
        self._table[:, used:used + n] = task.vectors.to(self.device)
        row = [i + used if i >= 0 else -1 for i in task.slot_to_vector]
        if len(row) > self._maps.shape[1]:  # a task with more slots than any before: widen every map (rare)
            self._maps = torch.nn.functional.pad(self._maps, (0, len(row) - self._maps.shape[1]), value=-1)
        if self._rows == self._maps.shape[0]:
            self._maps = torch.cat([self._maps, torch.full_like(self._maps, -1)])
            self._slots = torch.cat([self._slots, torch.zeros_like(self._slots)])
        self._maps[self._rows] = -1
        self._maps[self._rows, :len(row)] = torch.tensor(row, dtype=torch.long)
        self._slots[self._rows] = task.num_slots
        self._index[task.name], self._offsets[task.name] = self._rows, used
        self._rows, self._used = self._rows + 1, used + n
        if replaced is not None:
            self._dead += replaced.vectors.shape[1]
            self._dead_rows += 1
        if moved:
            self._repoint()  # O(tasks), once per doubling
        else:
            task.vectors = self._table[:, used:used + n]
            self.injector.table = self._table[:, :self._used]
        self._compact_if_sparse()

    def _compact_if_sparse(self) -> None:
        """Rebuild once holes are over half the table or the maps: O(live tasks), after as many removals."""
        if 2 * self._dead > self._used or 2 * self._dead_rows > self._rows:
            self._rebuild()

    # ------------------------------------------------------------------------------------ inputs

    def parse(self, items: Sequence) -> list[tuple[Task, list]]:
        """(task, texts) per item, or one line naming the first bad item. An item is {"task": name,
        "text": [text] | [text, text_pair] | text} or, for token tasks, {"task": name, "tokens": [word, ...]}."""
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
            raise PastaError(f"items must be a list of {{\"task\": ..., \"text\": [...]}} objects, got "
                             f"{type(items).__name__}")
        with self._lock:
            tasks = dict(self.tasks)
        return [parse_item(f"item {i}", item, tasks) for i, item in enumerate(items)]

    def encode(self, parsed: list[tuple[Task, list]]) -> list[dict]:
        """Tokenize every row as its task was trained (one tokenizer call per kind of input): a dict of
        input_ids, attention_mask, [token_type_ids,] special_tokens_mask, and word_starts for token rows."""
        rows: list[dict | None] = [None] * len(parsed)
        groups: dict[tuple, list[int]] = {}
        for i, (task, _) in enumerate(parsed):
            groups.setdefault((task.head == "token_classification", task.pair, task.max_length), []).append(i)
        for (token, pair, max_length), members in groups.items():
            texts = [parsed[i][1] for i in members]
            options = {"truncation": True, "max_length": max_length, "return_special_tokens_mask": True}
            if token:
                enc = self._word_tokenizer(texts, is_split_into_words=True, **options)
            else:
                enc = self.tokenizer(*zip(*texts), **options) if pair else self.tokenizer([t[0] for t in texts],
                                                                                           **options)
            for j, i in enumerate(members):
                rows[i] = {k: v[j] for k, v in enc.items()}
                if token:
                    rows[i]["word_starts"] = _first_subwords(enc.word_ids(j), len(texts[j]))
        return rows

    # ------------------------------------------------------------------------------------ forward

    def logits(self, items: Sequence, batch_size: int | None = None, progress=None) -> list[torch.Tensor]:
        """Each item's logits, in input order: (labels,) per sentence, (tokens, tags) per token row."""
        return [out for out, _ in self._run(self.parse(items), None, batch_size, progress)]

    def predict(self, items: Sequence, batch_size: int | None = None, progress=None) -> list[dict]:
        """Each item's prediction, in input order: {"label", "probabilities"} | {"score"} | {"tags"}."""
        return self.predict_encoded(self.parse(items), None, batch_size, progress)

    def predict_encoded(self, parsed: list, rows: list | None = None, batch_size=None, progress=None) -> list[dict]:
        """predict() on items already parsed (`parse`) and, where `rows` is given, tokenized (`encode`): the
        server tokenizes each item alone, so that one that cannot be encoded never joins a batch."""
        out = self._run(parsed, rows, batch_size, progress)
        return [prediction(task, logits, row) for (task, _), (logits, row) in zip(parsed, out)]

    def _run(self, parsed, rows, batch_size, progress):
        """Length-sorted batches of every row, whatever its task; outputs returned in input order."""
        rows = self.encode(parsed) if rows is None else rows
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        size = batch_size or max(len(rows), 1)
        out: list = [None] * len(rows)
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            for i, logits in zip(chunk, self._forward([parsed[i][0] for i in chunk], [rows[i] for i in chunk])):
                out[i] = (logits, rows[i])
            if progress is not None:
                progress.update(len(chunk))
        return out

    def _forward(self, tasks: list[Task], rows: list[dict]) -> list[torch.Tensor]:
        features = [{k: v for k, v in r.items() if k != "word_starts"} for r in rows]
        batch = {k: v.to(self.device) for k, v in self.tokenizer.pad(features, return_tensors="pt").items()}
        with self._lock, torch.inference_mode():
            for task in dict.fromkeys(tasks):
                if self.tasks.get(task.name) is not task:
                    raise PastaError(f"task '{task.name}' was removed or replaced while its rows waited: "
                                     "send them again")
            which = torch.tensor([self._index[t.name] for t in tasks], device=self.device)
            self.injector.row_maps, self.injector.row_slots = self._maps[which], self._slots[which]
            with torch.autocast(self.device.type, self._autocast or torch.float32, enabled=bool(self._autocast)):
                shared = self.encoder(**batch)
            hidden = shared.last_hidden_state.float()  # the heads are fp32 in every precision
            pooled = getattr(shared, "pooler_output", None)  # BERT: its pooler; others: none
            pooled = None if pooled is None else pooled.float()
            results: list = [None] * len(rows)
            for task in dict.fromkeys(tasks):
                mine = [i for i, t in enumerate(tasks) if t is task]
                idx = torch.tensor(mine, device=self.device)
                task.model.get_submodule(task.model.base_model_prefix).output = BaseModelOutputWithPooling(
                    last_hidden_state=hidden[idx], pooler_output=None if pooled is None else pooled[idx])
                logits = task.model(attention_mask=batch["attention_mask"][idx]).logits.float().cpu()
                for j, i in enumerate(mine):
                    n = len(rows[i]["input_ids"])
                    results[i] = logits[j, :n] if task.head == "token_classification" else logits[j]
        return results


def _first_subwords(word_ids: list, words: int) -> list[int | None]:
    """Position of each word's first sub-word (None for a word truncation cut off), as encode() scores them."""
    starts: dict[int, int] = {}
    for pos, w in enumerate(word_ids):
        if w is not None and w not in starts:
            starts[w] = pos
    return [starts.get(w) for w in range(words)]


def _same_backbone(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Path(resolve(a)).resolve() == Path(resolve(b)).resolve()
    except PastaError:
        return False

"""pasta-analyze heads: where every attention head looks (the paper's Figure 5 and its count of vertical heads).

For each layer x head, over every non-padding query row of the inputs: the attention mass on [CLS], on each
[SEP] slot apart, and on everything else (padding keys never count), and the fraction of query rows whose
argmax is the row's first or last real position. Attention maps are reduced batch by batch into these sums,
so memory does not grow with the number of inputs. Two rules call a head vertical, each named in the output:

    argmax_first_last  the official script's rule: at least 90% of the head's query rows put their argmax
                       on the first or the last position ([CLS] or the final [SEP])
    special_mass       the head's mean attention on the special tokens (all slots) is above a threshold
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pasta_cli.analysis import heads_figures
from pasta_cli.analysis.heads_figures import ARGMAX_RULE, MASS_RULE, Example
from pasta_cli.analysis.subject import (
    Subject,
    forward,
    inputs_for,
    load_backbone,
    load_pasta_adapter,
    resolve_inputs,
    vectors_kept,
)
from pasta_cli.errors import PastaError
from pasta_cli.files import write_csv, write_json
from pasta_cli.norms import slot_names
from pasta_cli.pasta import number_slots

ARGMAX_MIN_FRACTION = 0.9  # the official script's


def rule_descriptions(mass_threshold: float) -> dict[str, str]:
    return {
        ARGMAX_RULE: f"official script: at least {ARGMAX_MIN_FRACTION:.0%} of the head's query rows put their "
                     "argmax on the first or the last position of their input",
        MASS_RULE: f"mean attention on the special tokens ([CLS] and every [SEP]) above {mass_threshold}",
    }


def key_groups(attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor, num_slots: int) -> torch.Tensor:
    """(batch, length, num_slots + 1) one-hot: which group each key position belongs to, slot 0..P-1 or
    text (the last column); padding belongs to none. Slots are numbered as PASTA numbers them."""
    real = attention_mask.bool()
    slot = number_slots(special_tokens_mask.bool() & real)
    group = torch.where(slot >= 0, slot.clamp(max=num_slots - 1), num_slots)
    return torch.nn.functional.one_hot(group, num_slots + 1).float() * real.unsqueeze(-1)


def first_last_positions(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch,) first and last real position of each row, whichever side the tokenizer pads."""
    real = attention_mask.bool()
    length = real.shape[1]
    first = real.int().argmax(dim=1)
    last = length - 1 - real.flip(1).int().argmax(dim=1)
    return first, last


def argmax_hits(attention: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, heads, length) True where a real query row's argmax is its input's first or last position."""
    first, last = first_last_positions(attention_mask)
    top = attention.argmax(dim=-1)
    hit = (top == first[:, None, None]) | (top == last[:, None, None])
    return hit & attention_mask.bool()[:, None, :]


@dataclass
class HeadStats:
    """Running sums over query rows, per layer x head; `add` one batch's attention maps at a time."""

    num_layers: int
    num_heads: int
    num_slots: int
    mass: np.ndarray = field(init=False)         # (L, H, P + 1) summed attention per key group
    first_last: np.ndarray = field(init=False)   # (L, H) query rows whose argmax is first or last
    rows: int = 0                                # real query rows seen (the same for every head)
    examples: int = 0

    def __post_init__(self):
        self.mass = np.zeros((self.num_layers, self.num_heads, self.num_slots + 1))
        self.first_last = np.zeros((self.num_layers, self.num_heads))

    def add(self, attentions, attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor) -> None:
        """`attentions`: one (batch, heads, length, length) tensor per layer, as output_attentions gives."""
        keys = key_groups(attention_mask, special_tokens_mask, self.num_slots)
        queries = attention_mask.float()
        for layer, attention in enumerate(attentions):
            attention = attention.detach().float()
            self.mass[layer] += torch.einsum("bhqk,bkg,bq->hg", attention, keys, queries).double().numpy()
            self.first_last[layer] += argmax_hits(attention, attention_mask).sum(dim=(0, 2)).double().numpy()
        self.rows += int(attention_mask.sum())
        self.examples += int(attention_mask.shape[0])

    def mass_fractions(self) -> np.ndarray:
        """(L, H, P + 1) mean attention of a query row on each slot and on the text."""
        return self.mass / max(self.rows, 1)

    def special_mass(self) -> np.ndarray:
        """(L, H) mean attention on all special tokens together."""
        return self.mass_fractions()[..., :-1].sum(-1)

    def first_last_fraction(self) -> np.ndarray:
        return self.first_last / max(self.rows, 1)

    def vertical(self, mass_threshold: float) -> dict[str, np.ndarray]:
        """rule name -> (L, H) bool."""
        return {ARGMAX_RULE: vertical_by_argmax(self.first_last_fraction()),
                MASS_RULE: vertical_by_mass(self.special_mass(), mass_threshold)}


def vertical_by_argmax(first_last_fraction: np.ndarray) -> np.ndarray:
    return first_last_fraction >= ARGMAX_MIN_FRACTION


def vertical_by_mass(special_mass: np.ndarray, threshold: float) -> np.ndarray:
    return special_mass > threshold


def example_maps(attentions, attention_mask: torch.Tensor, tokens: list[str]) -> Example:
    """The first row of a batch, cut to its real tokens."""
    real = attention_mask[0].bool()
    maps = torch.stack([a[0][:, real][:, :, real] for a in attentions]).detach().float().numpy()
    return Example(tokens, maps)


def summary(stats: HeadStats, mass_threshold: float) -> dict:
    """The numbers of one state (frozen or adapted): vertical heads per layer and in all, by each rule."""
    rules = stats.vertical(mass_threshold)
    return {
        "vertical": {name: {"per_layer": v.sum(axis=1).astype(int).tolist(), "total": int(v.sum())}
                     for name, v in rules.items()},
        "special_mass_per_layer": stats.special_mass().mean(axis=1).round(4).tolist(),
        "special_mass_mean": round(float(stats.special_mass().mean()), 4),
    }


def table_rows(state: str, stats: HeadStats, slot_names: list[str], mass_threshold: float) -> list[dict]:
    """heads.csv: one row per (state, layer, head)."""
    fractions, special = stats.mass_fractions(), stats.special_mass()
    first_last, rules = stats.first_last_fraction(), stats.vertical(mass_threshold)
    rows = []
    for layer in range(stats.num_layers):
        for head in range(stats.num_heads):
            row = {"state": state, "layer": layer, "head": head}
            row.update({f"mass_{name}": round(float(v), 6) for name, v in zip(slot_names, fractions[layer, head])})
            row["mass_special"] = round(float(special[layer, head]), 6)
            row["argmax_first_last_fraction"] = round(float(first_last[layer, head]), 6)
            row.update({f"vertical_{name}": bool(v[layer, head]) for name, v in rules.items()})
            rows.append(row)
    return rows


def analyze(subject: Subject, batches, num_slots: int) -> tuple[dict[str, HeadStats], dict[str, Example]]:
    """Reduce every batch's attention maps into HeadStats, for the frozen backbone and, with an adapter, for
    the adapter too (the same model with its vectors zeroed is the frozen backbone: one model in memory).
    Returns the stats per state and the first input's maps per state (for the grid)."""
    states = ["frozen"] + (["adapter"] if subject.injector is not None else [])
    stats: dict[str, HeadStats] = {}
    examples: dict[str, Example] = {}
    for batch in batches:
        for state in states:
            frozen = subject.injector is not None and state == "frozen"
            with vectors_kept(subject.injector, [False] * subject.injector.num_layers) if frozen else nullcontext():
                attentions = forward(subject, batch, output_attentions=True).attentions
            if state not in stats:
                stats[state] = HeadStats(len(attentions), attentions[0].shape[1], num_slots)
                real = batch["attention_mask"][0].bool()
                tokens = subject.tokenizer.convert_ids_to_tokens(batch["input_ids"][0][real].tolist())
                examples[state] = example_maps(attentions, batch["attention_mask"], tokens)
            stats[state].add(attentions, batch["attention_mask"], batch["special_tokens_mask"])
            del attentions  # one batch's maps at a time
    if not stats:
        raise PastaError("no inputs to analyse: the split is empty")
    return stats, examples


def command(a, out: Path) -> dict:
    """pasta-analyze heads: load (eager attention), reduce, write heads.csv, heads.json and the figures."""

    started = time.perf_counter()
    if a.adapter:
        subject, run_dir = load_pasta_adapter(a.adapter, eager=True)
        spec, max_length, _ = resolve_inputs(a.overrides, run_dir)
    else:
        spec, max_length, backbone = resolve_inputs(a.overrides, None)
        subject = load_backbone(backbone, eager=True)
    loaded = time.perf_counter()
    batches, num_slots, described = inputs_for(subject, spec, a.sentence, a.split, a.samples, a.batch_size, max_length)
    stats, examples = analyze(subject, batches, num_slots)
    analysed = time.perf_counter()
    names = slot_names(subject.tokenizer, num_slots > 2) + ["text"]
    rows = [r for state, s in stats.items() for r in table_rows(state, s, names, a.mass_threshold)]
    write_csv(out / "heads.csv", rows)
    record = {"backbone": subject.backbone, "adapter": str(subject.adapter) if subject.adapter else None,
              "inputs": {**described, "examples": stats["frozen"].examples, "query_rows": stats["frozen"].rows},
              "layers": stats["frozen"].num_layers, "heads_per_layer": stats["frozen"].num_heads,
              "rules": rule_descriptions(a.mass_threshold),
              "states": {state: summary(s, a.mass_threshold) for state, s in stats.items()}}
    if "adapter" in stats:
        record["change"] = {"special_mass_per_layer": (stats["adapter"].special_mass() - stats["frozen"].special_mass())
                            .mean(axis=1).round(4).tolist()}
    title = f"{subject.backbone}" + (f" + adapter {subject.adapter.parent.name}" if subject.adapter else "")
    vertical = {state: s.vertical(a.mass_threshold) for state, s in stats.items()}
    for state, example in examples.items():
        heads_figures.attention_grid(example, vertical[state], out / f"attention_maps_{state}.png",
                                     f"{title} · {state}")
    heads_figures.mass_heatmaps({s: v.special_mass() for s, v in stats.items()}, vertical, out / "special_mass.png",
                                f"{title} · mass on special tokens · {described['what']}")
    record["seconds"] = {"load": round(loaded - started, 2), "analysis": round(analysed - loaded, 2),
                         "total": round(time.perf_counter() - started, 2)}
    write_json(out / "heads.json", record)
    return record


def report_lines(record: dict) -> list[str]:
    """What the command prints: vertical heads per layer by each rule, for each state."""
    lines = [f"{record['inputs']['what']}: {record['inputs']['examples']} inputs, {record['inputs']['query_rows']} "
             f"query rows, {record['layers']} layers x {record['heads_per_layer']} heads"]
    for state, s in record["states"].items():
        for rule, v in s["vertical"].items():
            lines.append(f"  {state:7s} {rule:18s} vertical: {v['total']:4d}  per layer {v['per_layer']}")
        lines.append(f"  {state:7s} mean special-token mass per layer {s['special_mass_per_layer']}")
    s = record["seconds"]
    lines.append(f"  time: load {s['load']} s, analysis {s['analysis']} s")
    return lines

"""What a table's numbers were computed with: the `manifest` of each run's results.json (written by
pasta_cli/training/manifest.py), as the line pasta-reproduce prints under the table. A value the runs share is
given once; values that differ read "mixed" with the values found."""

from __future__ import annotations

KEYS = ("python", "torch", "transformers", "peft", "datasets", "pasta-cli")
SHOWN = 3  # "mixed" lists at most this many of the values found


def one(values: list) -> str:
    """The value the runs share, or `mixed (a / b)`; a run that did not record it counts as `unknown`."""
    found = sorted({"unknown" if v is None else str(v) for v in values})
    if len(found) == 1:
        return found[0]
    more = f" / {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    return f"mixed ({' / '.join(found[:SHOWN])}{more})"


def commit(manifest: dict) -> str:
    """The code's commit, short, `-dirty` when a tracked file differed; `not a checkout` when none was found."""
    sha = manifest.get("git_commit")
    if not sha:
        return "not a checkout"
    return sha[:10] + ("-dirty" if manifest.get("git_dirty") else "")


def versions_text(runs: list[dict]) -> str:
    """One line naming the versions, commit, device and dtype of `runs` (results.json records); "" for none."""
    manifests = [r["manifest"] for r in runs if isinstance(r.get("manifest"), dict)]
    if not manifests:
        return ""
    parts = [f"{key} {one([m.get(key) for m in manifests])}" for key in KEYS]
    parts += [f"git {one([commit(m) for m in manifests])}", f"device {one([m.get('device') for m in manifests])}",
              f"dtype {one([m.get('dtype') for m in manifests])}",
              # the frozen weights' storage (model.dtype); runs from before it existed stored fp32
              f"frozen weights {one([m.get('frozen_dtype', 'float32') for m in manifests])}"]
    older = len(runs) - len(manifests)
    note = f" ({older} older run(s) recorded no versions)" if older else ""
    return f"Versions of the {len(manifests)} run(s) in this table (results.json `manifest`){note}: {', '.join(parts)}."


def versions_line(runs: list[dict]) -> str:
    """The paragraph under a table's markdown: the versions of the runs it aggregates; "" when none recorded them."""
    text = versions_text(runs)
    return f"\n{text}\n" if text else ""

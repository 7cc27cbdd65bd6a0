"""`pasta-reproduce submission table2`: the GLUE leaderboard's zip from a table's best runs.

For each GLUE task the table trained, the run of the chosen row (PASTA by default) with the best dev score
gives its test predictions, as pasta-train wrote them (test_predictions*.tsv). AX, the diagnostic set, is
predicted with the MNLI run's adapter by `pasta-predict`, as a user would. WNLI, which the paper does not
train, is either listed as missing or, with --wnli-majority, answered with the majority class as BERT did.
Every file is checked against the test file it answers (the one recorded in the run's config.yaml): the
same number of rows, the same indices, and predictions from the task's label vocabulary. A task without a
run is listed, and the zip is written only when every file is there, or when a partial one is asked for.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pasta_cli.errors import Parser, PastaError, run_cli
from pasta_cli.files import read_tsv, write_atomic
from pasta_cli.paper.results import load_results, row_key
from pasta_cli.paper.tables import table, table_names
from pasta_cli.run_folder import ADAPTER, read_config, read_predictions, test_file_name

# The leaderboard's file -> (task, its test split) whose predictions it holds; AX is MNLI's adapter on the
# diagnostic set, WNLI has no run in the paper.
GLUE_FILES = {
    "CoLA.tsv": ("cola", "test"), "SST-2.tsv": ("sst2", "test"), "MRPC.tsv": ("mrpc", "test"),
    "STS-B.tsv": ("stsb", "test"), "QQP.tsv": ("qqp", "test"), "MNLI-m.tsv": ("mnli", "test_matched"),
    "MNLI-mm.tsv": ("mnli", "test_mismatched"), "QNLI.tsv": ("qnli", "test"), "RTE.tsv": ("rte", "test"),
    "WNLI.tsv": ("wnli", "test"), "AX.tsv": ("mnli", "ax"),
}
WNLI_MAJORITY = "0"  # not_entailment: the majority class BERT submitted for WNLI (65.1 on the test set)


@dataclass
class Entry:
    """One leaderboard file: where its rows came from, or why it is missing."""

    name: str
    rows: list[list[str]] | None = None
    source: str = ""
    missing: str = ""


def best_run(sweep: Path, row: str) -> dict | None:
    """The finished run of `row` under a task's sweep folder with the best dev score (any seed, any setting)."""
    wanted = ("full", "pasta") if row == "pasta" else (row,)   # Table 2's PASTA row is the full variant
    runs = [r for r in load_results(sweep) if row_key(r) in wanted and r.get("best_score") is not None]
    return max(runs, key=lambda r: r["best_score"], default=None)


def vocabulary(task_cfg) -> set[str] | None:
    """The predictions a task's leaderboard file may hold (None: a score, any number)."""
    if task_cfg.kind == "regression":
        return None
    labels = list(task_cfg.labels)
    return {str(i) for i in range(len(labels))} if task_cfg.submission_labels == "ids" else set(labels)


def check(name: str, rows: list[list[str]], test_file: Path, allowed: set[str] | None) -> None:
    """The file answers every row of its test file, by index, with a prediction the leaderboard accepts."""
    try:
        test = read_tsv(test_file)
    except OSError as e:
        raise PastaError(f"{name}: cannot read the test file it answers, {test_file}: {e.strerror}") from None
    header, body = test[0], test[1:]
    if len(rows) - 1 != len(body):
        raise PastaError(f"{name}: {len(rows) - 1} predictions for the {len(body)} rows of {test_file}")
    if "index" in header:
        at = header.index("index")
        if [r[0] for r in rows[1:]] != [t[at] for t in body]:
            raise PastaError(f"{name}: its indices are not those of {test_file}, in order")
    for r in rows[1:]:
        value = r[1] if len(r) > 1 else ""
        if allowed is None:
            try:
                float(value)
            except ValueError:
                raise PastaError(f"{name}: index {r[0]} predicts {value!r}, not a number") from None
        elif value not in allowed:
            raise PastaError(f"{name}: index {r[0]} predicts {value!r}; the leaderboard takes {sorted(allowed)}")


def gather(table_name: str, folder: Path, row: str, ax_file: Path | None, wnli_file: Path | None,
           predict=None) -> list[Entry]:
    """Every leaderboard file of the table's tasks (and AX, WNLI), checked, or the reason it is missing."""
    tasks = set(table(table_name).tasks)
    entries = []
    for name, (task, split) in GLUE_FILES.items():
        entry = Entry(name)
        entries.append(entry)
        if task == "wnli":
            if wnli_file is None:
                entry.missing = "no WNLI run (the paper trains none): --wnli-majority answers with the majority class"
            else:
                body = read_tsv(wnli_file)[1:]
                entry.rows = [["index", "prediction"], *([r[0], WNLI_MAJORITY] for r in body)]
                entry.source = f"majority class for every row of {wnli_file}"
                check(name, entry.rows, wnli_file, {"0", "1"})
            continue
        if task not in tasks:
            entry.missing = f"{task} is no column of {table_name}"
            continue
        run = best_run(folder / task, row)
        if run is None:
            entry.missing = f"no finished {row} run under {folder / task}"
            continue
        run_dir = Path(run["_dir"])
        task_cfg = read_config(run_dir).task
        if split == "ax":
            if ax_file is None or not ax_file.is_file():
                entry.missing = f"no diagnostic file at {ax_file} (give --ax PATH)"
                continue
            entry.rows = (predict or predict_with_adapter)(run_dir, ax_file)
            entry.source = f"{run_dir}/adapter on {ax_file}"
            check(name, entry.rows, ax_file, vocabulary(task_cfg))
            continue
        path = run_dir / test_file_name(split)
        if not path.is_file():
            entry.missing = f"{run_dir} has no {path.name}: it ran without that test split (scale paper writes them)"
            continue
        entry.rows, entry.source = read_predictions(path), str(path)
        files = task_cfg.get("files") or {}
        test_file = Path(task_cfg.data_dir or "") / str(files.get(split, f"{split}.tsv"))
        check(name, entry.rows, test_file, vocabulary(task_cfg))
    return entries


def predict_with_adapter(run_dir: Path, inputs: Path) -> list[list[str]]:
    """A run's adapter on an unlabelled file, through pasta-predict (its GLUE-format TSV)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "pasta_cli.deploy.predict", "--adapter", f"ax={run_dir / ADAPTER}",
               "--input", f"ax={inputs}", "--output", out, "--no-progress"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PastaError(f"pasta-predict on {inputs} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return read_predictions(Path(out) / "ax.tsv")


def write_zip(path: Path, entries: list[Entry]) -> Path:
    """The zip, written beside its final name and renamed in (never half a zip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for e in entries:
            if e.rows is not None:
                z.writestr(e.name, "".join("\t".join(r) + "\n" for r in e.rows))
    tmp.replace(path)
    return path


PROG = "pasta-reproduce submission"


def main(argv: list[str]) -> int:
    """pasta-reproduce submission (exit codes: errors.run_cli)."""
    return run_cli(PROG, lambda: submit(argv))


def submit(argv: list[str]) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("table", choices=table_names(),
                   help="the table whose best runs answer the test sets (Table 2 is the one on GLUE's test set)")
    p.add_argument("--scale", default="paper", help="the table's scale folder (default paper: the only one "
                   "that writes test predictions)")
    p.add_argument("--row", default="pasta", help="the row whose runs answer (default pasta)")
    p.add_argument("--output-root", default="outputs", type=Path)
    p.add_argument("--data-dir", default="../shared/data", type=Path, help="for the AX and WNLI test files")
    p.add_argument("--ax", type=Path, default=None, help="the diagnostic set (default <data-dir>/glue/diagnostic/"
                   "diagnostic.tsv)")
    p.add_argument("--wnli-majority", action="store_true", help="answer WNLI with the majority class, as BERT did")
    p.add_argument("--partial", action="store_true", help="write the zip even when files are missing")
    p.add_argument("--output", type=Path, default=None, help="the zip (default <output-root>/<table>/<scale>/"
                   "submission.zip)")
    a = p.parse_args(argv)
    folder = a.output_root / a.table / a.scale
    ax = a.ax or a.data_dir / "glue" / "diagnostic" / "diagnostic.tsv"
    wnli = a.data_dir / "glue" / "WNLI" / "test.tsv" if a.wnli_majority else None
    entries = gather(a.table, folder, a.row, ax, wnli)
    for e in entries:
        print(f"{e.name:12s} " + (f"{len(e.rows) - 1} rows from {e.source}" if e.rows else f"missing: {e.missing}"))
    missing = [e.name for e in entries if e.rows is None]
    if missing and not a.partial:
        raise PastaError(f"{len(missing)} of {len(entries)} files missing ({', '.join(missing)}): no zip written; "
                         "--partial writes one without them")
    out = write_zip(a.output or folder / "submission.zip", entries)
    write_atomic(out.with_suffix(".txt"), "".join(f"{e.name}\t{e.source or 'missing: ' + e.missing}\n"
                                                 for e in entries))
    print(f"wrote {out} ({len(entries) - len(missing)} files; sources in {out.with_suffix('.txt')})")
    return 0

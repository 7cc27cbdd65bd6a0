"""pasta-predict: files in, files out, every task on one frozen backbone.

    pasta-predict --adapter rte=outputs/runs/rte/.../adapter --adapter sst2=... \\
                  --input rte=rte_test.tsv --input sst2=sst2.jsonl --output preds/

An input is read in the task's own way: the format from its extension (tsv, csv, jsonl, parquet,
txt = CoNLL), the text columns from the task spec the adapter carries (its test columns where the task
has them, as prediction inputs are unlabelled like a test split), or from `--columns NAME=a,b` (needed
for an adapter saved by hand, without a task spec). Rows of every input are batched together across tasks, sorted
by length. Each input gives `preds/<task>.jsonl`, one line per row in input order; an unlabelled
input of a task whose spec is known also gives `preds/<task>.tsv`, the GLUE leaderboard's file
(the run's own test_predictions.tsv format). Every row is checked before the model runs (a bad one
is one line naming its file and line), and the files are written only when every prediction is in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from pasta_cli.data import Kind, TaskData, TaskSpec, readers
from pasta_cli.data import columns as cols
from pasta_cli.data.sources import CONLL_LABEL, CONLL_TEXT, Split, positional
from pasta_cli.deploy.adapters import load_tasks, named, run_task
from pasta_cli.errors import Parser, PastaError, run_cli
from pasta_cli.eval import submission_rows
from pasta_cli.files import jsonl, write_atomic, write_tsv
from pasta_cli.items import parse_item
from pasta_cli.multitask import MultiTaskPasta, Task
from pasta_cli.precision import SERVING_PRECISIONS, resolve_serving

PROG = "pasta-predict"
FORMAT_OF = {ext: fmt for fmt, ext in readers.EXTENSIONS.items()}


class Input:
    """One input file's rows as model items, with where each came from and its ids."""

    def __init__(self, task: Task, path: Path, spec: TaskSpec | None, columns: list[str] | None):
        self.task, self.path, self.spec = task, path, spec
        if not path.is_file():
            raise PastaError(f"--input {task.name}={path}: no such file")
        fmt = FORMAT_OF.get(path.suffix.lstrip(".").lower())
        if fmt is None:
            raise PastaError(f"--input {task.name}={path}: cannot tell the format from the extension: name the file "
                             f"{', '.join('.' + e for e in readers.EXTENSIONS.values())} (txt: CoNLL)")
        conll = fmt == "conll"
        text = [CONLL_TEXT] if conll else columns or self._spec_columns()
        want = 1 if task.head == "token_classification" or not task.pair else 2
        if len(text) != want:
            raise PastaError(f"--columns {task.name}={','.join(text)}: task '{task.name}' takes {want} text column"
                             f"{'s (a sentence pair)' if want == 2 else ''}")
        index = (spec.test_columns.index if spec and spec.test_columns else None) or (spec.index if spec else None)
        records = list(readers.read(path, fmt, header=conll or not positional(text)))
        if not records:
            raise PastaError(f"--input {task.name}={path}: the file holds no rows to predict")
        if not conll:
            self._check_columns(text, records[0], columns is not None, want)
        label = CONLL_LABEL if conll else (spec.label if spec else None)
        self.labelled = label is not None and label in records[0][1]
        token = task.head == "token_classification"
        kind = Kind.token_classification if token else Kind.classification
        read, _ = cols.read_split(Split(records, text, None, index, test=True), kind, labels=None)
        self.idx = read["idx"]
        self.items = []
        for i, (where, _) in enumerate(records):
            item = ({"task": task.name, "tokens": read["tokens"][i]} if token else
                    {"task": task.name, "text": [read[k][i] for k in ("text_a", "text_b")[:want]]})
            parse_item(where, item, {task.name: task})  # a row the model cannot take: named by file and line
            self.items.append(item)

    def _check_columns(self, text: list[str], first: tuple, given: bool, want: int) -> None:
        """One line naming a text column the file lacks, where the names came from, and the file's columns."""
        where, record = first
        missing = [c for c in text if c not in record]
        if missing:
            name = self.task.name
            source = f"--columns {name}={','.join(text)}" if given else "the text columns of the adapter's task spec"
            found = list(record)
            raise PastaError(f"{where}: no column {missing[0]!r} ({source}); the file's columns are "
                             f"{', '.join(map(repr, found))}: name the text column{'s' if want > 1 else ''} with "
                             f"--columns {name}={','.join(found[:want])}")

    def _spec_columns(self) -> list[str]:
        spec, name = self.spec, self.task.name
        if spec is None:
            raise PastaError(f"--input {name}={self.path}: adapter '{name}' has no run folder to say which columns "
                             f"hold the text: name them, --columns {name}=COLUMN[,COLUMN2]")
        test = spec.test_columns.text if spec.test_columns and spec.test_columns.text else None
        return list(test or spec.text)

    def leaderboard_rows(self, predictions: list[dict]) -> list[tuple] | None:
        """The GLUE submission rows (the run's test_predictions.tsv format) for an unlabelled input of a
        task whose spec is known (the adapter's or its run's); None otherwise."""
        if self.spec is None or self.labelled:
            return None
        task = self.task
        if task.head == "regression":
            preds = np.array([p["score"] for p in predictions])
        elif task.head == "token_classification":
            preds = [[task.labels.index(t) for t in p["tags"] if t is not None] for p in predictions]
        else:
            preds = np.array([task.labels.index(p["label"]) for p in predictions])
        return submission_rows(TaskData(self.spec, {}), "test", self.idx, preds)


def predict_files(model: MultiTaskPasta, inputs: dict[str, Input], output: Path, batch_size: int,
                  progress: bool = True) -> dict[str, Path]:
    """Predict every input's rows in one length-sorted stream, then write every file (atomically)."""
    items = [item for inp in inputs.values() for item in inp.items]
    with tqdm(total=len(items), desc="predicting", unit="row", disable=not progress or None) as bar:
        predictions = model.predict(items, batch_size=batch_size, progress=bar)
    written, start = {}, 0
    outputs = []
    for name, inp in inputs.items():
        mine = predictions[start:start + len(inp.items)]
        start += len(inp.items)
        outputs.append((output / f"{name}.jsonl", jsonl(mine)))
        rows = inp.leaderboard_rows(mine)
        if rows is not None:
            outputs.append((output / f"{name}.tsv", ("index", "prediction"), rows))
    for path, *content in outputs:  # nothing is written before every prediction is in
        written[path.name] = write_atomic(path, content[0]) if len(content) == 1 else write_tsv(path, *content)
    return written


def parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0],
               epilog="Example: pasta-predict --adapter rte=outputs/runs/rte/.../adapter --input rte=test.tsv "
                      "--output preds/")
    p.add_argument("--adapter", action="append", required=True, metavar="NAME=PATH",
                   help="a task's adapter folder (a run's adapter/); repeat for more tasks")
    p.add_argument("--input", action="append", required=True, metavar="NAME=FILE",
                   help="rows to predict for task NAME (.tsv .csv .jsonl .parquet, .txt for CoNLL); repeat")
    p.add_argument("--columns", action="append", metavar="NAME=COL[,COL2]",
                   help="the text column(s) of task NAME's input (default: the task spec the adapter carries)")
    p.add_argument("--output", required=True, type=Path, help="folder for <task>.jsonl (and <task>.tsv)")
    p.add_argument("--backbone", help="hub id or folder (default: the first adapter's backbone)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", metavar="{" + ",".join(SERVING_PRECISIONS) + "}",
                   help="the frozen encoder's number format: auto (bf16 where this machine runs bf16 natively, else "
                        "fp32), fp32, bf16 (stored in bf16), int8 (dynamic quantization, CPU), fp16 (autocast) "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(argv: list[str] | None = None) -> dict[str, Path]:
    args = parser().parse_args(argv)
    if args.batch_size < 1:
        raise PastaError(f"--batch-size {args.batch_size}: must be at least 1")
    adapters = named(args.adapter, "--adapter", "rte=outputs/runs/rte/.../adapter")
    files = named(args.input, "--input", "rte=rte_test.tsv")
    columns = {k: v.split(",") for k, v in named(args.columns, "--columns", "rte=sentence1,sentence2").items()}
    for name in [*files, *columns]:
        if name not in adapters:
            raise PastaError(f"task '{name}' has an input or columns but no adapter: add --adapter {name}=PATH "
                             f"(the tasks are {', '.join(adapters)})")
    folder = next(p for p in (args.output.absolute(), *args.output.absolute().parents) if p.exists())
    if not folder.is_dir():
        raise PastaError(f"--output {args.output}: '{folder}' is a file, not a folder: name a folder for the "
                         "<task>.jsonl files (it is made if missing)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise PastaError("--device cuda but no CUDA GPU is visible: use --device auto or cpu")
    resolve_serving(args.precision, device)  # a bad --precision is one line before anything loads
    model = load_tasks(adapters, args.backbone, device=device, precision=args.precision)
    inputs = {name: Input(model.tasks[name], Path(path), run_task(adapters[name]), columns.get(name))
              for name, path in files.items()}
    print(f"{PROG}: {len(model.tasks)} task(s) on {model.backbone}, {device}, precision {model.precision}"
          + (f" (--precision {args.precision})" if args.precision != model.precision else ""), file=sys.stderr)
    written = predict_files(model, inputs, args.output, args.batch_size, progress=not args.no_progress)
    for path in written.values():
        print(f"{PROG}: wrote {path}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()  # "Loading weights" bars; ours counts rows
    code = run_cli(PROG, lambda: run(argv))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()

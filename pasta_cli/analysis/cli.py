"""pasta-analyze: why does PASTA work? Three subcommands, each writing CSV/JSON numbers and PNG figures to --out
(default outputs/analysis/<subcommand>/<stamp>, never reused):

    heads   where every attention head looks, which heads are vertical (the paper's Figure 5)
    norms   the vectors' L2 norms of several runs in one figure (the paper's Figure 4)
    ablate  the dev score with the vectors of some layers zeroed (where along the depth PASTA works)

Task and backbone are chosen as for pasta-train (`task=rte task.data_dir=... model=minilm`); with a run
folder, its config.yaml says them and overrides are dotted keys on it (`task.data_dir=...`).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from datasets import disable_progress_bars
from transformers.utils import logging as hf_logging

from pasta_cli.config import time_stamp
from pasta_cli.data import TaskSpec
from pasta_cli.errors import Parser, one_line, run_cli

PROG = "pasta-analyze"
TASK_KEYS = tuple(f.name for f in fields(TaskSpec))  # named where a task key is unknown


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{heads,norms,ablate}")
    out = dict(type=Path, default=None, help="folder for the numbers and figures (default outputs/analysis/...)")

    heads = sub.add_parser("heads", help="attention on special tokens per layer x head; vertical heads (Figure 5)")
    heads.add_argument("overrides", nargs="*", help="task=rte task.data_dir=... model=minilm (as for pasta-train)")
    heads.add_argument("--adapter", help="a run folder or adapter folder: the same with its vectors added, "
                                         "beside the frozen backbone (also written adapter=PATH)")
    heads.add_argument("--sentence", metavar="TEXT", help="analyse this one sentence instead of a task sample")
    heads.add_argument("--sentence2", metavar="TEXT", help="with --sentence: the pair's second sentence")
    heads.add_argument("--split", help="the task split to sample (default: its first evaluation split)")
    heads.add_argument("--samples", type=positive, default=256, help="seeded sample size (default 256)")
    heads.add_argument("--batch-size", type=positive, default=16)
    heads.add_argument("--mass-threshold", type=float, default=0.5,
                       help="special_mass rule: vertical when mean attention on special tokens is above this")
    heads.add_argument("--out", **out)

    norms = sub.add_parser("norms", help="vector L2 norms of several runs in one figure (Figure 4)")
    norms.add_argument("runs", nargs="+", help="run folders (or adapter folders) of PASTA runs")
    norms.add_argument("--out", **out)

    ablate = sub.add_parser("ablate", help="dev score with the vectors of some layers zeroed, for every layer")
    ablate.add_argument("run", help="a pasta-train run folder (adapter/ and config.yaml)")
    ablate.add_argument("overrides", nargs="*", help="dotted keys on the run's config.yaml (task.data_dir=...)")
    ablate.add_argument("--split", help="the split to score (default: the task's first evaluation split)")
    ablate.add_argument("--samples", type=positive, default=None, help="score a seeded sample (default: all)")
    ablate.add_argument("--batch-size", type=positive, default=64)
    ablate.add_argument("--out", **out)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()  # "Loading weights" and "tokenizing" bars would bury the one error line
    disable_progress_bars()
    p = parser()
    # overrides may come before, between or after the options (argparse alone keeps them before)
    a, extra = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    unknown = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(a, "overrides")]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        a.overrides = [*a.overrides, *extra]
    spelled = [o for o in getattr(a, "overrides", []) if o.startswith("adapter=")]
    if spelled and hasattr(a, "adapter"):  # `adapter=PATH`, pasta-train's spelling, is --adapter PATH
        if a.adapter or len(spelled) > 1:
            p.error("give the adapter once (adapter=PATH or --adapter PATH)")
        a.adapter = spelled[0].removeprefix("adapter=")
        a.overrides = [o for o in a.overrides if o not in spelled]
    # each subcommand's module loads torch and transformers: imported only for the command run
    if a.command == "heads":
        from pasta_cli.analysis import heads as module
        if a.sentence2 and not a.sentence:
            p.error("--sentence2 needs --sentence (the pair's first sentence)")
        a.sentence = [s for s in (a.sentence, a.sentence2) if s]
    elif a.command == "norms":
        from pasta_cli.analysis import norms as module
    else:
        from pasta_cli.analysis import ablate as module
    # time_stamp, not run_stamp: run_stamp also sets PASTA_RUN_STAMP for a sweep's jobs, which would give every
    # later pasta-train started from this process (a test's subprocess) the same folder
    out = a.out or Path("outputs") / "analysis" / a.command / time_stamp()
    # a bad task=... or model=... override is a config error: one line, as pasta-train says it
    return run_cli(f"{PROG} {a.command}", lambda: report(module, a, out), explain=lambda e: one_line(e, TASK_KEYS))


def report(module, a: argparse.Namespace, out: Path) -> int:
    record = module.command(a, out)
    print("\n".join(module.report_lines(record)))
    print(f"files: {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

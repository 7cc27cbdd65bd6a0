"""pasta-train: the Hydra command line. `python -m pasta_cli.train` is the same (and what torchrun runs).

Every mistake a user can fix ends in one line, `pasta-train: error: ...`, exit code 2, and leaves
the run folder as it was (no new folder): our own checks (PastaError) and Hydra's config errors (an
unknown option, a misspelt key, a value of the wrong type) alike. A write that fails (full disk) is
one line too, exit code 1, with the previous files intact. The run folder's rules: training/folder.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import fields
from importlib.metadata import version
from pathlib import Path

import hydra
import torch
import torch.distributed as tdist
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from transformers.utils import logging as hf_logging

from pasta_cli import backbones
from pasta_cli.config import CONF_MODULE, STAMP_ENV, check_config, run_stamp, task_spec
from pasta_cli.data import TaskSpec, load_task
from pasta_cli.errors import PastaError
from pasta_cli.files import NOT_ALLOWED
from pasta_cli.methods import get_method
from pasta_cli.training import artifacts, checkpoint, dist, folder, resume
from pasta_cli.training.loop import Diverged, Interrupted, progress, train

log = logging.getLogger("pasta")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


def check_main_metric(cfg: DictConfig, task) -> None:
    main = cfg.trainer.main_metric
    if main is not None and main not in task.metrics:
        raise PastaError(f"trainer.main_metric '{main}' is not a metric of task {task.name}: "
                         f"choose one of {', '.join(task.metrics)}")


def check_backbone(cfg: DictConfig, task) -> None:
    """What can be known about the backbone before it loads: that it is a model, that packing can keep its
    sequences apart, that max_length fits its positions, and that the method can work with its tokenizer."""
    config = backbones.load_config(cfg.model.name_or_path)
    if cfg.trainer.packing:
        backbones.check_packing(config, cfg.model.name_or_path)
    limit = backbones.max_length_limit(config)
    if limit and cfg.trainer.max_length > limit:
        raise PastaError(f"trainer.max_length={cfg.trainer.max_length} is beyond {cfg.model.name_or_path}'s "
                         f"{limit} positions: use trainer.max_length={limit} or less")
    tokenizer = backbones.load_tokenizer(cfg.model.name_or_path, pretokenized=task.kind == "token_classification")
    get_method(cfg.method.name).check_tokenizer(tokenizer, task.pair)


def prepare(cfg: DictConfig, run_dir: Path, admission: folder.Admission) -> tuple[DictConfig, object]:
    """Every check a run can fail before training: settings, data, backbone, and what a resume resumes.
    Returns the config the run really uses (the task's derived values, resume as admitted) and the task."""
    check_config(cfg, torch.cuda.is_available())
    task = load_task(task_spec(cfg))  # bad data stops here, before a model loads or a file is written
    check_main_metric(cfg, task)
    check_backbone(cfg, task)
    used = cfg.copy()
    used.task = OmegaConf.structured(task.spec)
    used.resume = admission.action == "resume"
    step = None
    if used.resume:  # refuse a resume under other settings before any training time is spent
        ckpt = run_dir / checkpoint.CHECKPOINT
        seen = checkpoint.peek(ckpt)
        resume.changes(seen["settings"], resume.settings(used, task, dist.world_size()), f"checkpoint '{ckpt}'")
        step = seen["state"]["step"]
    if dist.is_main():
        for leftover in folder.remove_leftovers(run_dir):
            log.info("removed %s, left by an interrupted write", leftover)
        if HydraConfig.initialized():
            folder.write_hydra_files(run_dir, HydraConfig.get(), cfg, step)
        artifacts.write_config(run_dir, used)
    return used, task


@contextmanager
def job_log(run_dir: Path):
    """train.log in the run folder (rank 0), from admission to the end of the job: the job's log lines and its
    progress (`loop.progress`: losses, evaluations, the summary), which the console shows as a bar instead."""
    if not dist.is_main():
        yield
        return
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    level = log.level
    log.setLevel(logging.INFO)  # also where no Hydra logging config set the root's level (run_job in a script)
    progress.propagate = False
    for logger in (logging.getLogger(), progress):
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in (logging.getLogger(), progress):
            logger.removeHandler(handler)
        log.setLevel(level)
        handler.close()


def run_job(cfg: DictConfig, run_dir: Path) -> dict | None:
    """One job: admit it into its folder (locked), refuse bad settings and data, train, report."""
    run_dir = Path(run_dir)
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    lock = folder.FolderLock(run_dir)

    def enter() -> tuple[folder.Admission, bool]:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.__enter__()
        try:
            return folder.admit(run_dir, cfg.resume, multirun), folder.is_empty(run_dir)
        except PastaError:
            folder.discard(run_dir)  # only if empty: Hydra made it for this refused run
            lock.__exit__()
            raise

    try:
        admission, was_empty = dist.decide(enter)
        if admission.action == "skip" and not multirun:
            _say(f"pasta-train: {admission.message}")  # exit 0: the run is done; the line says why nothing trained
            return None
        if admission.message and dist.is_main():
            log.info(admission.message)
        if admission.action == "skip":
            return None
        try:
            cfg, task = prepare(cfg, run_dir, admission)
        except PastaError:
            if dist.is_main() and was_empty:
                folder.discard(run_dir)  # a refused run leaves no folder behind
            raise
        with job_log(run_dir):
            results = train(cfg, run_dir, task)
            if dist.is_main() and results and not results.get("stopped"):
                for line in artifacts.summary_lines(results, run_dir):
                    progress.info(line)
    finally:
        lock.__exit__()
    if dist.is_main() and results and not results.get("stopped"):
        print("\n".join(artifacts.summary_lines(results, run_dir)), flush=True)
    if results and results.get("stopped"):
        raise Diverged(results["stopped"]["reason"])
    return results


# the jobs of this invocation that were refused, as (message, exit code): a sweep goes on with the others. Only
# the text is kept: the exception's traceback would keep the failed job's frames (an open reader) alive until exit
REFUSED: list[tuple[str, int]] = []
JOBS: list[Path] = []  # the jobs Hydra started (their run folders): an error before any is the overrides' fault


@hydra.main(config_path=f"pkg://{CONF_MODULE}", config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig):
    # a refusal is returned to main() rather than raised through Hydra, which would add its own
    # "Error executing job with overrides: [...]" line and stop a sweep at its first bad job
    # under Hydra's submitit launcher with several SLURM tasks per job, they become torchrun-like ranks
    if dist.adopt_slurm_tasks():
        agree_on_run_stamp()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    JOBS.append(run_dir)
    try:
        results = run_job(cfg, run_dir)
    except PastaError as e:
        REFUSED.append((str(e), e.exit_code))
        return None
    # what a sweeper maximises (hparams_search=optuna): the score the run chose its epoch on (held-out, under
    # trainer.selection=heldout: a search must not read dev either), also of a run finished before
    if results is None and (run_dir / artifacts.RESULTS).is_file():
        results = json.loads((run_dir / artifacts.RESULTS).read_text())
    if not results:
        return None
    chosen_on = next(iter((results.get("selection_scores") or results["best_scores"]).values()))  # older runs: dev
    return chosen_on[results["main_metric"]]


def agree_on_run_stamp() -> None:
    """Under torchrun, rank 0's clock names the run folder for all ranks and nodes."""
    if dist.world_size() > 1 and STAMP_ENV not in os.environ:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        os.environ[STAMP_ENV] = dist.broadcast(run_stamp())


def one_line(err: BaseException) -> str:
    """A Hydra/OmegaConf config error as one line: where, what was wrong, the key, and the choices.

    Hydra's messages span lines ("In 'task/x': ValidationError raised while composing config:", the
    problem, "full_key: task.epochs", the schema's type names, the config search path), and an
    override's error keeps its reason in the chained exception; the useful lines are joined.
    """
    lines = str(err).splitlines()
    reason = err.__cause__ or err.__context__
    if isinstance(reason, OmegaConfBaseException) and str(reason).splitlines()[0] not in str(err):
        lines += str(reason).splitlines()
    parts, key = [], None
    for line in (x.strip() for x in lines):
        if line.startswith("Config search path"):
            break  # Hydra's list of where it looked: not what the user got wrong
        if line.startswith("full_key:"):
            key = line.removeprefix("full_key:").strip()
        elif line and not line.startswith(("reference_type=", "object_type=")):
            parts.append(re.sub(r"\w+ raised while composing config:", "", line).strip())
    text = " ".join(p if p.endswith((":", ".")) else p + ";" for p in parts if p).rstrip(";")
    if "Available options" in text:  # a missing config option: list the choices on one line
        head, options = text.split("Available options", 1)
        group, names = options.split(":", 1)
        text = f"{head.rstrip('; ')}; available options{group}: {', '.join(names.replace(';', ' ').split())}"
    if key and key.startswith("task.") and "not in 'TaskSpec'" in text:
        text += f"; a task's keys are {', '.join(f.name for f in fields(TaskSpec))}"
    if key and "is not a ListConfig, list or tuple" in text:  # `text: text` in a task YAML, or task.text=text
        where = text.split(": ", 1)[0] + ": " if text.startswith("In '") else ""
        example = LIST_EXAMPLES.get(key, "[a, b]")
        return (f"{where}{key} takes a list in brackets: {key.rsplit('.', 1)[-1]}: {example} in a YAML file, "
                f"{key}={example.split(' (')[0].replace(' ', '')} on the command line")
    return f"{text} (key {key})" if key else text


# what a list-valued key looks like, for the one line that says a plain value was given where a list belongs
LIST_EXAMPLES = {"task.text": "[sentence] (single sentences; [sentence1, sentence2] for pairs)",
                 "task.labels": "[negative, positive]", "task.metrics": "[accuracy]",
                 "task.eval_splits": "[validation]", "optim.betas": "[0.9, 0.999]"}
NULL_SECTIONS = ("task.hub", "task.builtin", "task.test_columns")  # null unless a task sets them


def composition_error(err: BaseException) -> str:
    """An error OmegaConf raised (not as its own kind) while Hydra applied an override, as one line: a key set
    inside a section the task leaves null (task.hub.path=x on a task without hub) is the known cause."""
    key = None
    tb = err.__traceback__
    while tb is not None:  # the override Hydra was applying, from its frame (hydra's _apply_overrides_to_config)
        override = tb.tb_frame.f_locals.get("override")
        key = getattr(override, "key_or_group", key)
        tb = tb.tb_next
    section = next((s for s in NULL_SECTIONS if key and (key == s or key.startswith(s + "."))), None)
    if section:
        return (f"{key} cannot be set from the command line on a task without {section} (it is null there): "
                f"write the task's {section.split('.')[1]} section in a task YAML and pass --config-dir")
    return f"cannot apply {key or 'the overrides'} ({type(err).__name__}: {str(err).splitlines()[0]})"


def main() -> None:
    args = sys.argv[1:]
    if "--version" in args:  # Hydra's own flag would print Hydra's version
        print(f"pasta-train {version('pasta-cli')}")
        return
    if {"--help", "-h", "--cfg", "-c"} & set(args) and "--resolve" not in args:
        sys.argv.append("--resolve")  # the config's values as a run gets them, not ${recipe:...}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    user_wants_tracebacks = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's config errors reach us, to print them as one line
    agree_on_run_stamp()
    JOBS.clear()
    REFUSED.clear()  # main() may run more than once in a process (tests, notebooks)
    try:
        _hydra_main()
        if REFUSED:
            for message, _ in REFUSED[:-1]:
                _say(f"pasta-train: error: {message}")
            _exit(f"pasta-train: error: {REFUSED[-1][0]}", max(code for _, code in REFUSED))
    except PastaError as e:
        _exit(f"pasta-train: error: {e}", e.exit_code)
    except (HydraException, OmegaConfBaseException) as e:
        if user_wants_tracebacks:
            raise
        _exit(f"pasta-train: error: {one_line(e)}", 2)
    except OSError as e:  # after Hydra's errors (its MissingConfigException is an OSError)
        if user_wants_tracebacks:
            raise
        # e.g. Hydra cannot create the run folder: one line naming the path
        advice = ": choose a hydra.run.dir you can write to" if e.errno in NOT_ALLOWED else ""
        _exit(f"pasta-train: error: {e.strerror or e} ({e.filename or type(e).__name__}){advice}", 2)
    except KeyboardInterrupt as e:  # Ctrl-C: one line, the shell's 130; the run resumes exactly from its checkpoint
        _exit(f"pasta-train: {e.args[0] if isinstance(e, Interrupted) else 'interrupted'}", 130)
    except Exception as e:
        if user_wants_tracebacks or JOBS:
            raise  # a bug in a job: its traceback is what a report needs
        _exit(f"pasta-train: error: {composition_error(e)}", 2)
    finally:
        dist.shutdown()


def _exit(line: str, code: int) -> None:
    """The one error line (rank 0 only) and the exit code (2: bad input, 1: a failed write); main()'s
    `finally` leaves the process group."""
    _say(line)
    sys.exit(code)


def _say(line: str) -> None:
    """One line, whatever a message quotes from the user's files (a label with a newline in it stays on it)."""
    if dist.is_main():
        print(line.replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

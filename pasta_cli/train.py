"""pasta-train: the Hydra command line. `python -m pasta_cli.train` is the same (and what torchrun runs).

Every mistake a user can fix ends in one line, `pasta-train: error: ...`, exit code 2, and leaves
the run folder as it was (no new folder): our own checks (PastaError) and Hydra's config errors (an
unknown option, a misspelt key, a value of the wrong type) alike. A write that fails (full disk) is
one line too, exit code 1, with the previous files intact. The run folder's rules: training/folder.py.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import fields
from importlib.metadata import version
from pathlib import Path

import hydra
import torch
import torch.distributed as tdist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from transformers.utils import logging as hf_logging

from pasta_cli import backbones, run_folder
from pasta_cli.config import CONF_MODULE, STAMP_ENV, check_config, run_stamp, task_spec
from pasta_cli.data import TaskSpec, load_task
from pasta_cli.errors import PastaError, composition_error, one_line, run_cli, say
from pasta_cli.files import NOT_ALLOWED
from pasta_cli.methods import get_method
from pasta_cli.training import artifacts, build, checkpoint, dist, folder, resume
from pasta_cli.training.loop import Diverged, progress, train

PROG = "pasta-train"
TASK_KEYS = tuple(f.name for f in fields(TaskSpec))  # named where a task key is unknown
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
    # the storage the run really uses (auto resolved, fp32 where the method keeps it): config.yaml says what was done
    device_type = build.device_type_of(used)
    used.model.dtype = build.frozen_storage(used, device_type)
    used.model.attn_implementation = build.attention(used, device_type, used.model.dtype)
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
    handler = logging.FileHandler(run_dir / run_folder.TRAIN_LOG)
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
            _say(f"{PROG}: {admission.message}")  # exit 0: the run is done; the line says why nothing trained
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
    if results is None and run_folder.is_finished(run_dir):
        results = run_folder.read_results(run_dir)
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


def main() -> None:
    args = sys.argv[1:]
    if "--version" in args:  # Hydra's own flag would print Hydra's version
        print(f"{PROG} {version('pasta-cli')}")
        return
    if {"--help", "-h", "--cfg", "-c"} & set(args) and "--resolve" not in args:
        sys.argv.append("--resolve")  # the config's values as a run gets them, not ${recipe:...}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    tracebacks = bool(os.environ.get("HYDRA_FULL_ERROR"))  # the user's: config and OS errors raise
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's config errors reach us, to print them as one line
    agree_on_run_stamp()
    JOBS.clear()
    REFUSED.clear()  # main() may run more than once in a process (tests, notebooks)
    try:
        code = run_cli(PROG, _run_hydra, printer=_say, explain=lambda e: one_line(e, TASK_KEYS), os_error=_os_error,
                       unknown=None if tracebacks else _composition_error, tracebacks=tracebacks)
    finally:
        dist.shutdown()
    if code:
        sys.exit(code)


def _run_hydra() -> None:
    """Hydra's run or sweep; the jobs it refused are one line each, the last one raised (the highest exit code:
    2 bad input, 1 a failed write)."""
    _hydra_main()
    for message, _ in REFUSED[:-1]:
        _say(f"{PROG}: error: {message}")
    if REFUSED:
        refused = PastaError(REFUSED[-1][0])
        refused.exit_code = max(code for _, code in REFUSED)
        raise refused


def _os_error(e: OSError) -> tuple[str, int]:
    """e.g. Hydra cannot create the run folder: one line naming the path (exit 2: the user chose it)."""
    advice = ": choose a hydra.run.dir you can write to" if e.errno in NOT_ALLOWED else ""
    return f"{e.strerror or e} ({e.filename or type(e).__name__}){advice}", 2


def _composition_error(e: Exception) -> str | None:
    """An error before any job started is the overrides' fault (one line); in a job, a bug (its traceback)."""
    return None if JOBS else composition_error(e)


def _say(line: str) -> None:
    """One line (rank 0 only), whatever a message quotes from the user's files (errors.say)."""
    if dist.is_main():
        say(line)


if __name__ == "__main__":
    main()

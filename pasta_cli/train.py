"""pasta-train: the Hydra command line. `python -m pasta_cli.train` is the same (and what torchrun runs).

Every mistake a user can fix ends in one line, `pasta-train: error: ...`, exit code 2, and leaves
no run folder behind: our own checks (PastaError) and Hydra's config errors (an unknown option, a
misspelt key, a value of the wrong type) alike.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from dataclasses import fields
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

from pasta_cli.config import CONF_MODULE, STAMP_ENV, check_config, run_stamp, task_spec
from pasta_cli.data import TaskSpec, load_task
from pasta_cli.errors import PastaError
from pasta_cli.training import artifacts, dist
from pasta_cli.training.loop import train

log = logging.getLogger("pasta")
HYDRA_LEFTOVERS = {".hydra", "main.log", "train.log", "config.yaml"}


def _discard_if_empty(run_dir: Path) -> None:
    """A run refused before training leaves nothing behind but Hydra's own bookkeeping: remove that."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_LEFTOVERS:
        shutil.rmtree(run_dir, ignore_errors=True)


def check_main_metric(cfg: DictConfig, task) -> None:
    main = cfg.trainer.main_metric
    if main is not None and main not in task.metrics:
        raise PastaError(f"trainer.main_metric '{main}' is not a metric of task {task.name}: "
                         f"choose one of {', '.join(task.metrics)}")


def run_job(cfg: DictConfig, run_dir: Path) -> dict | None:
    """One job: refuse bad settings and bad data, never redo or clobber a finished run, train, report."""
    finished = run_dir / "results.json"
    if finished.exists():
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if multirun or cfg.resume:
            log.info("%s already holds a finished run: skipping it", run_dir)
            return None
        raise PastaError(f"{run_dir} already holds a finished run (results.json): choose a new hydra.run.dir, "
                         "or resume=true to keep it")
    check_config(cfg, torch.cuda.is_available())
    task = load_task(task_spec(cfg))  # bad data stops here, before a model loads or a file is written
    check_main_metric(cfg, task)
    # config.yaml records what the run really uses: the task's derived labels, metrics and files
    cfg = cfg.copy()
    cfg.task = OmegaConf.structured(task.spec)
    if dist.is_main():
        artifacts.write_config(run_dir, cfg)
    results = train(cfg, run_dir, task)
    if dist.is_main() and results:
        print("\n".join(artifacts.summary_lines(results, run_dir)), flush=True)
    return results


@hydra.main(config_path=f"pkg://{CONF_MODULE}", config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_job(cfg, run_dir)
    except PastaError:
        if dist.is_main():
            _discard_if_empty(run_dir)
        raise


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
    return f"{text} (key {key})" if key else text


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    user_wants_tracebacks = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's config errors reach us, to print them as one line
    agree_on_run_stamp()
    try:
        _hydra_main()
    except PastaError as e:
        _exit(f"pasta-train: error: {e}")
    except (HydraException, OmegaConfBaseException) as e:
        if user_wants_tracebacks:
            raise
        _exit(f"pasta-train: error: {one_line(e)}")
    finally:
        dist.shutdown()


def _exit(line: str) -> None:
    """The one error line (rank 0 only) and exit code 2; main()'s `finally` leaves the process group."""
    if dist.is_main():
        print(line, file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
    main()

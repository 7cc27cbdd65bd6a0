"""Experiment loggers. Local files are always written by the trainer; a logger only mirrors them.
`logger=` picks one tracker or a list (W&B here; MLflow, TensorBoard and CSV in training/trackers.py).

W&B is optional in every sense: not installed, not logged in, no network, or any error inside it
warns once and the run goes on with local files.
"""

from __future__ import annotations

import logging
import os

from pasta_cli.errors import PastaError
from pasta_cli.training.trackers import OPENERS, TRACKERS, Guarded, Trackers, chosen

log = logging.getLogger(__name__)


class NullLogger:
    def log(self, metrics: dict, step: int) -> None: ...
    def image(self, key: str, path, step: int | None = None) -> None: ...
    def summary(self, results: dict) -> None: ...
    def finish(self) -> None: ...


class WandbLogger(NullLogger):
    def __init__(self, cfg, resolved_config: dict, run_dir):
        self._run = None
        self._warned = False
        try:
            import wandb

            lc = cfg.logger
            self._wandb = wandb
            self._run = wandb.init(
                project=lc.project, entity=lc.entity, group=lc.group or os.environ.get("PASTA_WANDB_GROUP"),
                tags=list(lc.tags or []), name=lc.name_format, mode=lc.mode, dir=str(run_dir),
                config=resolved_config, reinit="finish_previous",
            )
        except Exception as e:  # noqa: BLE001 - any W&B failure must not cost the run
            self._warn(e)

    def _warn(self, err: Exception) -> None:
        if not self._warned:
            log.warning("W&B logging is off for this run (%s: %s); local files are still written",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            self._warned = True
        self._run = None

    def log(self, metrics, step):
        if self._run:
            try:
                self._run.log(metrics, step=step)
            except Exception as e:  # noqa: BLE001
                self._warn(e)

    def image(self, key, path, step=None):
        if self._run:
            try:
                self._run.log({key: self._wandb.Image(str(path))}, step=step)
            except Exception as e:  # noqa: BLE001
                self._warn(e)

    def summary(self, results):
        if self._run:
            try:
                for k, v in results.items():
                    if not isinstance(v, dict):  # the scores and the manifest are in results.json
                        self._run.summary[k] = v
            except Exception as e:  # noqa: BLE001
                self._warn(e)

    def finish(self):
        if self._run:
            try:
                self._run.finish()
            except Exception as e:  # noqa: BLE001
                self._warn(e)


def make_logger(cfg, resolved_config: dict, run_dir, main_process: bool):
    """The trackers `logger=` chose (pasta_cli.training.trackers), each of whose failures only warns."""
    if cfg.logger.get("name") not in (None, "none", "wandb"):
        raise PastaError(f"unknown logger '{cfg.logger.name}': choose none, {', '.join(TRACKERS)} or a list of them")
    names = chosen(cfg.logger) if main_process else []
    if not names:
        return NullLogger()
    return Trackers([WandbLogger(cfg, resolved_config, run_dir) if name == "wandb" else
                     Guarded(name, lambda n=name: OPENERS[n](resolved_config["logger"][n], resolved_config, run_dir))
                     for name in names])

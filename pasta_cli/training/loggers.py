"""Experiment loggers. Local files are always written by the trainer; a logger only mirrors them.
`logger=` picks one tracker or a list (W&B here; MLflow, TensorBoard and CSV in training/trackers.py).

W&B is optional in every sense: not installed, not logged in, no network, or any error inside it
warns once (trackers.Guarded, as every tracker) and the run goes on with local files.
"""

from __future__ import annotations

import os

from pasta_cli.errors import PastaError
from pasta_cli.training.trackers import OPENERS, TRACKERS, Guarded, Trackers, chosen


class NullLogger:
    def log(self, metrics: dict, step: int) -> None: ...
    def image(self, key: str, path, step: int | None = None) -> None: ...
    def summary(self, results: dict) -> None: ...
    def finish(self) -> None: ...


class WandbTracker:
    """W&B with the four calls of the other trackers; `Guarded` (as for them) turns any failure into one warning."""

    def __init__(self, settings: dict, resolved_config: dict, run_dir):
        import wandb

        self._wandb = wandb
        self._run = wandb.init(
            project=settings["project"], entity=settings["entity"],
            group=settings["group"] or os.environ.get("PASTA_WANDB_GROUP"), tags=list(settings["tags"] or []),
            name=settings["name_format"], mode=settings["mode"], dir=str(run_dir), config=resolved_config,
            reinit="finish_previous",
        )

    def log(self, metrics, step):
        self._run.log(metrics, step=step)

    def image(self, key, path, step=None):
        self._run.log({key: self._wandb.Image(str(path))}, step=step)

    def summary(self, results):
        for k, v in results.items():
            if not isinstance(v, dict):  # the scores and the manifest are in results.json
                self._run.summary[k] = v

    def finish(self):
        self._run.finish()


def make_logger(cfg, resolved_config: dict, run_dir, main_process: bool):
    """The trackers `logger=` chose (pasta_cli.training.trackers), each of whose failures only warns."""
    if cfg.logger.get("name") not in (None, "none", "wandb"):
        raise PastaError(f"unknown logger '{cfg.logger.name}': choose none, {', '.join(TRACKERS)} or a list of them")
    names = chosen(cfg.logger) if main_process else []
    if not names:
        return NullLogger()
    settings = resolved_config["logger"]  # W&B's keys are logger.*, each other tracker's under logger.<name>
    return Trackers([Guarded(name, lambda n=name: (WandbTracker if n == "wandb" else OPENERS[n])(
        settings if n == "wandb" else settings[n], resolved_config, run_dir)) for name in names])

"""pasta-train: the Hydra command line. `python -m pasta_cli.train` is the same (and what torchrun runs)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pasta_cli import dist
from pasta_cli.config import CONF_DIR, STAMP_ENV, check_config, run_stamp
from pasta_cli.errors import PastaError

log = logging.getLogger("pasta")


def summary_lines(results: dict, run_dir: Path) -> list[str]:
    best = results["best_scores"]
    scores = "  ".join(f"{split}/{k}={100 * v:.2f}" for split, s in best.items() for k, v in s.items())
    return [
        f"done: {results['task']} · {results['model']} · {results['method']}"
        + (f" ({results['variant']})" if results.get("variant") else ""),
        f"  best {results['main_metric']} = {100 * results['best_score']:.2f} at epoch {results['best_epoch']} "
        f"(step {results['best_step']} of {results['steps']})",
        f"  dev: {scores}",
        f"  trainable: {results['trainable_method']:,} method ({results['trainable_method_pct']:.4f}%) + "
        f"{results['trainable_head']:,} head = {results['trainable']:,} ({results['trainable_pct']:.4f}% of "
        f"{results['backbone_params']:,})",
        f"  effective batch {results['effective_batch_size']} · wall time {results['wall_time_s']:.1f} s",
        f"  files: {run_dir}/ (results.json, metrics.jsonl, adapter/, dev_predictions.tsv"
        + (", norms.png" if (run_dir / "norms.png").exists() else "") + ")",
    ]


def _discard_if_empty(run_dir: Path) -> None:
    """A run refused before training leaves nothing behind but Hydra's own bookkeeping: remove that."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", "main.log", "train.log", "config.yaml"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def run_job(cfg: DictConfig, run_dir: Path) -> dict | None:
    """One job: refuse bad settings, never redo or clobber a finished run, train, report."""
    import torch

    from pasta_cli.report import write_atomic
    from pasta_cli.trainer import train

    finished = run_dir / "results.json"
    if finished.exists():
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if multirun or cfg.resume:
            log.info("%s already holds a finished run: skipping it", run_dir)
            return None
        raise PastaError(f"{run_dir} already holds a finished run (results.json): choose a new hydra.run.dir, "
                         "or resume=true to keep it")
    check_config(cfg, torch.cuda.is_available())
    if dist.is_main():
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    results = train(cfg, run_dir)
    if dist.is_main() and results:
        print("\n".join(summary_lines(results, run_dir)), flush=True)
    return results


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_job(cfg, run_dir)
    except PastaError as e:
        if dist.is_main():
            print(f"pasta-train: error: {e}", file=sys.stderr, flush=True)
            _discard_if_empty(run_dir)
        dist.shutdown()
        sys.exit(2)


def agree_on_run_stamp() -> None:
    """Under torchrun, rank 0's clock names the run folder for all ranks and nodes."""
    if dist.world_size() > 1 and STAMP_ENV not in os.environ:
        import torch
        import torch.distributed as tdist

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        os.environ[STAMP_ENV] = dist.broadcast(run_stamp())


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    agree_on_run_stamp()
    try:
        _hydra_main()
    finally:
        dist.shutdown()


if __name__ == "__main__":
    main()

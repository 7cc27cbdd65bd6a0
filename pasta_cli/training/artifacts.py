"""The run folder, the record a researcher reads months later:

    config.yaml           the resolved config, with the task's derived values (labels, metrics, files)
    metrics.jsonl         one line per evaluation (rewritten whole, atomically, at each one)
    results.json          the best model's scores, counts and budget (written last, atomically)
    adapter/              the best model's adapter (pasta_cli.adapter: one format for every method)
    <figure>.png          the method's own figure (PASTA: norms.png, the paper's Figure 4)
    dev_predictions.tsv   the best model on the first evaluation split, each row with its gold label (what
                          the paired bootstrap of pasta-reproduce resamples), classes by name as pasta-predict
                          and pasta-serve write them; test_predictions*.tsv: the GLUE submission files for
                          unlabelled test splits (classes by name or id, as the GLUE server expects)
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from pasta_cli.adapter import save_adapter
from pasta_cli.config import recipe_name
from pasta_cli.eval import predictions, submission_rows
from pasta_cli.files import jsonl, write_atomic, write_json, write_tsv
from pasta_cli.modeling import parameter_counts
from pasta_cli.run_folder import ADAPTER, CONFIG, DEV_PREDICTIONS, FIGURE, METRICS, RESULTS, test_file_name
from pasta_cli.training.manifest import manifest


def write_config(run_dir: Path, cfg) -> None:
    write_atomic(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


def write_metrics(run_dir: Path, records: list[dict]) -> None:
    """metrics.jsonl holding exactly these records, rewritten whole at every evaluation (a few KB): a
    crash or a full disk mid-write leaves the previous file, never a cut line, and a resumed run's
    file holds exactly the evaluations its checkpoint knows."""
    write_atomic(run_dir / METRICS, jsonl(records))


def save_best(run, run_dir: Path) -> None:
    """adapter/: the best model's tensors, and what inference needs to treat inputs as this run did (its
    max_length and resolved task spec), so the folder predicts the same wherever it is copied."""
    cfg = run.cfg
    spec = OmegaConf.to_container(OmegaConf.structured(run.task.spec), resolve=True, enum_to_str=True)
    save_adapter(run.model, run_dir / ADAPTER, backbone=cfg.model.name_or_path, head=run.head,
                 pair=run.task.pair, task=run.task.name, method=run.method.name,
                 settings=OmegaConf.to_container(cfg.method, resolve=True),
                 max_length=cfg.trainer.max_length, task_spec=spec)


def draw(run, run_dir: Path, step: int | None, suffix: str = "") -> Path | None:
    """The method's figure of the current model, if the method has one."""
    cfg = run.cfg
    title = f"{run.task.name} · {cfg.model.tag} · {cfg.method.get('variant') or cfg.method.name} · step {step}{suffix}"
    return run.method.figure(run.model, run.tokenizer, run.task.pair, run_dir / FIGURE, title)


def prediction_files(task) -> list[tuple[str, str]]:
    """(split, file name): dev predictions of the first evaluation split, and a GLUE submission file
    for every unlabelled test split (a labelled one, CoNLL-2003's or the built-in task's, is for scoring)."""
    files = [(task.eval_splits[0], DEV_PREDICTIONS)]
    files += [(s, test_file_name(s)) for s in task.test_splits if not task.labelled(s)]
    return files


def write_predictions(run, run_dir: Path, predict) -> None:
    """`predict(split) -> (logits, labels)` for each prediction file, written as (index, prediction) rows,
    with a third column, the gold label in the same form, where the split is labelled (the dev file)."""
    for split, name in prediction_files(run.task):
        logits, labels = predict(split)
        idx = run.data[split]["idx"]
        named = run.task.labelled(split)  # the dev file names classes (as pasta-predict does); GLUE's test files
        rows = submission_rows(run.task, split, idx, predictions(run.task, logits), labels, names=named)  # may want ids
        if named and labels is not None:
            gold = submission_rows(run.task, split, idx, labels, labels, names=True)  # written as predictions are
            write_tsv(run_dir / name, ("index", "prediction", "label"), [(*r, g[1]) for r, g in zip(rows, gold)])
        else:
            write_tsv(run_dir / name, ("index", "prediction"), rows)


def results(run, state, final: dict | None = None) -> dict:
    """results.json: what the best model scored, what it trained, and with which budget. With held-out
    selection, `final` is the chosen model's one dev evaluation: best_scores and best_score report it, and
    `selection_scores` what the choice was made on."""
    cfg, t = run.cfg, run.cfg.trainer
    c = parameter_counts(run.model)
    scores = state.best_scores if final is None else final
    record = {
        "task": run.task.name, "model": cfg.model.tag, "backbone": cfg.model.name_or_path,
        "method": cfg.method.name, "variant": cfg.method.get("variant"),
        "recipe": recipe_name(cfg),  # whose recipe (paper.yaml `recipes`) set the budget: the method's, or pasta
        "main_metric": run.main_metric, "selection": t.selection,
        "best_score": scores[run.task.eval_splits[0]][run.main_metric] if scores else None,
        "best_scores": scores, "selection_scores": state.best_scores,
        "best_epoch": state.best_epoch, "best_step": state.best_step,
        "epochs_run": state.epoch, "steps": state.step,
        "trainable": c["trainable"], "trainable_method": c["method"], "trainable_head": c["head"],
        "trainable_pct": c["trainable_pct"], "trainable_method_pct": c["method_pct"], "backbone_params": c["backbone"],
        "seed": cfg.seed, "lr": cfg.optim.lr, "epochs": t.epochs,
        "batch_size_per_device": t.batch_size, "devices": run.world, "grad_accum": t.grad_accum,
        "effective_batch_size": t.batch_size * run.world * t.grad_accum,
        "precision": t.precision, "wall_time_s": round(state.wall, 2),
        "resumes": state.resumes,  # each resume's step and the settings it changed (docs/RELIABILITY.md)
        "manifest": manifest(run.device, run.amp_dtype, run.frozen_dtype),  # versions, commit, device (manifest.py)
    }
    if state.stopped:  # a non-finite loss or output stopped the run: the scores are the last good model's, if any
        record["stopped"] = state.stopped
    return record


def write_results(run_dir: Path, record: dict) -> None:
    write_json(run_dir / RESULTS, record)


def summary_lines(record: dict, run_dir: Path) -> list[str]:
    """What pasta-train prints at the end of a run."""
    scores = "  ".join(f"{split}/{k}={100 * v:.2f}" for split, s in record["best_scores"].items() for k, v in s.items())
    return [
        f"done: {record['task']} · {record['model']} · {record['method']}"
        + (f" ({record['variant']})" if record.get("variant") else ""),
        f"  best {record['main_metric']} = {100 * record['best_score']:.2f} at epoch {record['best_epoch']} "
        f"(step {record['best_step']} of {record['steps']})",
        f"  dev: {scores}",
        f"  trainable: {record['trainable_method']:,} method ({record['trainable_method_pct']:.4f}%) + "
        f"{record['trainable_head']:,} head = {record['trainable']:,} ({record['trainable_pct']:.4f}% of "
        f"{record['backbone_params']:,})",
        f"  effective batch {record['effective_batch_size']} · wall time {record['wall_time_s']:.1f} s",
        f"  files: {run_dir}/ ({RESULTS}, {METRICS}, {ADAPTER}/, {DEV_PREDICTIONS}"
        + (f", {FIGURE}" if (run_dir / FIGURE).exists() else "") + ")",
    ]

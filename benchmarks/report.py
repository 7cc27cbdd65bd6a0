"""The results of a benchmark run: the ratios that compare PASTA with the others, the markdown table
written beside the JSON, and what the machine was. No bound is judged here: docs/PERFORMANCE.md says
what each ratio was compared with."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import peft
import torch
import transformers

# (name, section, numerator, denominator): the ratios the results report
RATIOS = (
    ("pasta/floor", "methods", "pasta", "floor"),
    ("pasta/bitfit", "methods", "pasta", "bitfit"),
    ("pasta/lora", "methods", "pasta", "lora"),
    ("pasta/full_ft", "methods", "pasta", "full_ft"),
    ("inference pasta/plain", "inference", "pasta", "plain"),
)


def machine(device: str) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "device": device,
            "load_avg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def ratios(res: dict) -> dict:
    """PASTA against the others: ratio of the medians, of the fastest steps, of the CPU times, and the
    range of the per-round ratios (how far the noise moves it)."""
    out = {}
    for name, section, a, b in RATIOS:
        x, y = res[section].get(a), res[section].get(b)
        if x and y:
            per_round = [p / q for p, q in zip(x["round_medians_s"], y["round_medians_s"], strict=True)]
            out[name] = {"median": x["step_s"] / y["step_s"], "fastest": x["step_s_min"] / y["step_s_min"],
                         "cpu": x["cpu_step_s"] / y["cpu_step_s"], "per_round": [min(per_round), max(per_round)]}
    pasta, full = res["methods"].get("pasta", {}), res["methods"].get("full_ft", {})
    if pasta.get("peak_mem_mb") and full.get("peak_mem_mb"):
        out["memory pasta/full_ft"] = {"peak": pasta["peak_mem_mb"] / full["peak_mem_mb"],
                                       "over_runtime": pasta["peak_over_runtime_mb"] / full["peak_over_runtime_mb"]}
    if res.get("epoch"):
        out["epoch pad_max/grouped"] = res["epoch"]["pad_max"]["wall_s"] / res["epoch"]["grouped"]["wall_s"]
    return out


def markdown(res: dict) -> str:
    c = res["config"]
    load = "/".join(f"{x:.1f}" for x in res["machine"]["load_avg_at_end"] or ()) or "-"
    lines = [f"# bench: {c['model']}, batch {c['batch_size']} x {c['seq_len']}, {c['device']}, {c['precision']}", "",
             f"`{res['command']}`", "",
             (f"{res['date']}; {res['machine']['cpu']}, {res['machine']['cores']} cores, "
              f"torch threads: {res['machine']['torch_threads']}, load average at the end: {load}; "
              f"batches: {c['batches']}; rounds x timed steps: {c['rounds']} x {c['steps']}, warm-up steps: "
              f"{c['warmup']}; {res.get('wall_s', 0) / 60:.1f} min in all"), "",
             "| method | trainable | step ms (median) | fastest ms | examples/s | CPU ms | peak MB "
             "| peak - runtime MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in res["methods"].items():
        mem = [f"{r[k]:.0f}" if r.get(k) is not None else "-" for k in ("peak_mem_mb", "peak_over_runtime_mb")]
        lines.append(f"| {name} | {r['trainable']:,} | {r['step_s'] * 1e3:.1f} | {r['step_s_min'] * 1e3:.1f} | "
                     f"{r['examples_per_s']:.1f} | {r['cpu_step_s'] * 1e3:.0f} | {mem[0]} | {mem[1]} |")
    if res["inference"]:
        lines += ["", "| inference (eval, forward only) | step ms (median) | fastest ms | examples/s | CPU ms |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {r['step_s'] * 1e3:.1f} | {r['step_s_min'] * 1e3:.1f} | {r['examples_per_s']:.1f} | "
                  f"{r['cpu_step_s'] * 1e3:.0f} |" for name, r in res["inference"].items()]
    lines += ["", "| ratio | medians | fastest steps | CPU time | per-round range |", "|---|---:|---:|---:|---|"]
    for name, r in res["ratios"].items():
        if isinstance(r, dict) and "median" in r:
            lines.append(f"| {name} | {r['median']:.3f} | {r['fastest']:.3f} | {r['cpu']:.3f} | "
                         f"{r['per_round'][0]:.3f}-{r['per_round'][1]:.3f} |")
    if "memory pasta/full_ft" in res["ratios"]:
        m = res["ratios"]["memory pasta/full_ft"]
        lines.append(f"| memory pasta/full_ft | peak {m['peak']:.3f} | over runtime {m['over_runtime']:.3f} | | |")
    if res.get("epoch"):
        e = res["epoch"]
        lines += ["", (f"Whole epoch of PASTA on {e['task']} ({e['examples']} examples, {e['batches']} batches"
                       f"{', a random subset' if e['subset'] else ''}):"), "",
                  "| batching | wall s | examples/s | padded tokens | padding share |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {e[name]['wall_s']:.1f} | {e[name]['examples_per_s']:.1f} | "
                  f"{e[name]['padded_tokens']:,} | {e[name]['padding_share']:.1%} |"
                  for name in ("grouped", "dynamic", "pad_max")]
        lines += ["", f"pad_max / grouped wall time: {res['ratios']['epoch pad_max/grouped']:.2f}x"]
    return "\n".join(lines) + "\n"

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
    ("pasta_bf16/pasta", "methods", "pasta_bf16", "pasta"),
    ("pasta_bf16/pasta_autocast", "methods", "pasta_bf16", "pasta_autocast"),
    ("pasta_autocast/pasta", "methods", "pasta_autocast", "pasta"),
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
    for a, b in (("pasta", "full_ft"), ("pasta_bf16", "pasta"), ("pasta_bf16", "pasta_autocast")):
        x, y = res["methods"].get(a, {}), res["methods"].get(b, {})
        if x.get("peak_mem_mb") and y.get("peak_mem_mb"):
            out[f"memory {a}/{b}"] = {"peak": x["peak_mem_mb"] / y["peak_mem_mb"],
                                      "over_runtime": x["peak_over_runtime_mb"] / y["peak_over_runtime_mb"]}
    if res.get("epoch"):
        out["epoch pad_max/grouped"] = res["epoch"]["pad_max"]["wall_s"] / res["epoch"]["grouped"]["wall_s"]
    return out


def markdown(res: dict) -> str:
    c = res["config"]
    load = "/".join(f"{x:.1f}" for x in res["machine"]["load_avg_at_end"] or ()) or "-"
    lines = [f"# bench: {c['model']}, batch {c['batch_size']} x {c['seq_len']}, {c['device']}, {c['precision']}"
             f"{', model.dtype ' + c['dtype'] if c.get('dtype') else ''}", "",
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
    for name, m in res["ratios"].items():
        if name.startswith("memory "):
            lines.append(f"| {name} | peak {m['peak']:.3f} | over runtime {m['over_runtime']:.3f} | | |")
    if res.get("roofline"):
        roof = res["roofline"]
        peaks = ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in roof["peak_gflops"].items())
        lines += ["", f"Roofline: matmul peak {roof['matmul']} on {roof['threads']} thread(s), measured before and "
                      f"after the timed rounds (the faster kept): {peaks}.", "",
                  "| step | computes in | GFLOP per step | GFLOP/s | share of the same-dtype peak |",
                  "|---|---|---:|---:|---:|"]
        for section in ("methods", "inference"):
            for name, r in res[section].items():
                if "gflops" in r:
                    label = name if section == "methods" else f"inference {name}"
                    lines.append(f"| {label} | {r['compute_dtype']} | {r['gflop_per_step']:.1f} | {r['gflops']:.1f} | "
                                 f"{r['peak_share']:.0%} |")
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

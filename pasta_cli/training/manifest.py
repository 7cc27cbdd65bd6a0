"""The manifest in every results.json: what the numbers were computed with, so a table can cite it.

    "manifest": {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.1.0", "peft": "0.18.0",
                 "datasets": "4.4.1", "pasta-cli": "0.1.0", "git_commit": "d2d1dd7...", "git_dirty": false,
                 "device": "cuda (NVIDIA H200)", "dtype": "bfloat16", "frozen_dtype": "bfloat16"}

`git_commit`/`git_dirty` are there only when pasta-cli runs from a git checkout (an editable install): the
commit of the package's own folder, and whether a tracked file differs from it. An installed wheel, a folder
git does not track, or no git at all: neither key. A package that is not installed: null.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from pasta_cli.precision import STORAGE

PACKAGES = ("torch", "transformers", "peft", "datasets", "pasta-cli")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # pasta_cli/


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    """A git command's output in the package's folder; None when it fails (no git, not a repository)."""
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # runs side by side: no index lock
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """{git_commit, git_dirty} of the checkout pasta-cli runs from; {} outside one. The package's own files must
    be tracked, so a wheel installed in a virtual environment inside some repository is not taken for it."""
    if shutil.which("git") is None or _git("ls-files", "--error-unmatch", "__init__.py") is None:
        return {}
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def device_text(device: torch.device) -> str:
    """`cpu`, or `cuda (NVIDIA H200)`: the device type and, for a GPU, its name."""
    kind = torch.device(device).type
    if kind == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return kind


def manifest(device, precision_dtype: torch.dtype | None, frozen_dtype: str = "fp32") -> dict:
    """The versions, the code's commit, the device, the dtype the model computed in (fp32 unless autocast) and
    the one its frozen weights were stored in (model.dtype as resolved)."""
    return {"python": platform.python_version(), **{name: version(name) for name in PACKAGES}, **git_state(),
            "device": device_text(device), "dtype": str(precision_dtype or torch.float32).removeprefix("torch."),
            "frozen_dtype": str(STORAGE[frozen_dtype]).removeprefix("torch.")}

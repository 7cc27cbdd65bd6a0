"""Shared fixtures: the real benchmark data in ../shared/data (see its README.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_root_path() -> Path:
    """The real-data folder: $PASTA_DATA_DIR, else ../shared/data next to the repository."""
    return Path(os.environ.get("PASTA_DATA_DIR") or DEFAULT_DATA_ROOT)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """../shared/data (or $PASTA_DATA_DIR); skips the test where it is absent."""
    root = data_root_path()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent (set PASTA_DATA_DIR to run the real-data tests)")
    return root


def pytest_collection_modifyitems(items):
    """Tests marked `last` (the installed-wheel test) run after everything else."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)

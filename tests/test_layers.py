"""The import layers of docs/ARCHITECTURE.md, as pyproject.toml's import-linter contracts declare them: the
package keeps them, and the check can fail: a copy of the package with one import reaching up is refused,
with the line that names it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def lint(package_parent: Path, cwd: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts on the `pasta_cli` found in `package_parent`."""
    config = cwd / "importlinter.toml"
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = [f'root_package = "{contracts["root_package"]}"']
    for c in contracts["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{k} = {_toml(v)}" for k, v in c.items()]
    config.write_text("[tool.importlinter]\n" + "\n".join(lines) + "\n")
    env = {"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT), str(config), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _toml(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace('"', '\\"') + '"'


def copy_package(tmp_path: Path) -> Path:
    parent = tmp_path / "src"
    shutil.copytree(ROOT / "pasta_cli", parent / "pasta_cli", ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    return parent


def test_the_package_keeps_its_layers(tmp_path):
    done = lint(copy_package(tmp_path), tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout


@pytest.mark.parametrize("module, upward, reported", [
    # the library reaching into the runner
    ("modeling.py", "from pasta_cli import train", "pasta_cli.modeling -> pasta_cli.train"),
    # data reaching up to eval
    ("data/spec.py", "from pasta_cli.eval import metrics", "pasta_cli.data.spec -> pasta_cli.eval.metrics"),
    # one command's room into another's
    ("deploy/batcher.py", "from pasta_cli.paper import tables", "pasta_cli.deploy.batcher -> pasta_cli.paper.tables"),
    # a command into the runner's internals
    ("paper/tables.py", "from pasta_cli.training import loop", "pasta_cli.paper.tables -> pasta_cli.training.loop"),
])
def test_an_upward_import_fails_the_check(tmp_path, module, upward, reported):
    parent = copy_package(tmp_path)
    target = parent / "pasta_cli" / module
    target.write_text(target.read_text() + f"\n{upward}  # noqa\n")
    done = lint(parent, tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert reported in done.stdout and "BROKEN" in done.stdout, done.stdout[-3000:]


def test_every_room_has_a_layer():
    """A new module under pasta_cli/ must be placed in a layer, or the contract would not see it reach up."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layered = {name.strip() for c in contracts if c["type"] == "layers" for layer in c["layers"]
               for name in layer.replace("|", ":").split(":")}
    rooms = {f"pasta_cli.{p.stem}" for p in (ROOT / "pasta_cli").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert rooms - {"pasta_cli.conf"} <= layered, f"not in any layer of pyproject's importlinter: {rooms - layered}"


def test_every_package_ships_in_the_wheel():
    """setuptools' explicit package list must name every folder of the package (a new room left out installs
    without its modules: the wheel test would find it only minutes later)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pasta_cli").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found <= listed, f"add to pyproject's [tool.setuptools] packages: {sorted(found - listed)}"

"""The package as users install it: a wheel that holds every module, and modules that import nothing from its root."""

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "connectomics_mednext"


def test_the_wheel_holds_every_module(tmp_path):
    # Built from a copy, so that no build/ folder of an earlier build can supply what the sources lack.
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir"]
    subprocess.run([*build, str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("connectomics_mednext-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    modules = {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py")}
    assert modules and modules <= shipped, sorted(modules - shipped)


def _imports_of_the_root(path: Path) -> list:
    """The ``from .. import x`` (or ``from connectomics_mednext import x``) lines of a module below the root."""
    depth = len(path.relative_to(PACKAGE).parts) - 1
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            absolute = node.level == 0 and node.module == "connectomics_mednext"
            relative = node.level > 0 and node.level == depth + 1 and node.module is None
            if absolute or relative:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_module_imports_the_package_root_from_below():
    below = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"]
    assert [line for path in below for line in _imports_of_the_root(path)] == []

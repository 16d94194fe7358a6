"""What pip installs: the wheel holds every module and data file of the source tree.

The tests import deltasync from the checkout (an editable install), so without this a module
the package configuration leaves out only shows when someone installs the wheel
(``ModuleNotFoundError: No module named 'deltasync.checks'``). ``scripts/wheel-check``, which
``.ci/run`` calls, goes further: it installs the wheel in a fresh venv and runs a feed with it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A stale build/ in particular would put back what the package configuration leaves out.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".hypothesis",
    ".*_cache",
    "__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
)
TOP_OUTPUTS = {"var", "demo", "bench-out"}
"""What demo, bench and local runs leave at the top of a checkout: large, and not source."""


def _not_source(folder: str, names: list[str]) -> set[str]:
    top = TOP_OUTPUTS & set(names) if Path(folder) == ROOT else set()
    return set(NOT_SOURCE(folder, names)) | top


def _source_files(folder: Path, installed_as: str) -> set[str]:
    return {
        f"{installed_as}/{path.relative_to(folder).as_posix()}"
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_not_source)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
    subprocess.run(
        [*command, "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [wheel] = (tmp_path / "dist").glob("deltasync-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        console = archive.read(entry_points).decode()
    shipped = {name for name in names if ".dist-info/" not in name}
    expected = _source_files(ROOT / "deltasync", "deltasync") | _source_files(
        ROOT / "migrations", "deltasync/_migrations"
    )
    assert sorted(expected - shipped) == []  # missing from the wheel
    assert sorted(shipped - expected) == []  # in the wheel but not in the source tree
    assert "deltasync = deltasync.cli:main" in console


def test_python_m_deltasync() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deltasync", "--help"], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"Usage: deltasync [OPTIONS] COMMAND")

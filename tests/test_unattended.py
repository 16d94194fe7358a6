"""Running unattended: the systemd units verify and are hardened; `deltasync --version`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_service_is_hardened_and_runs_one_feed() -> None:
    service = directives(UNITS / "deltasync@.service")
    assert service["ExecStart"] == ["/usr/local/bin/deltasync --feed %i run"]
    assert service["User"] == ["deltasync"] and service["Type"] == ["oneshot"]
    for key, value in {
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "UMask": "0077",
    }.items():
        assert service[key] == [value], key
    assert service["ReadWritePaths"] == ["/var/lib/deltasync"]
    assert "SuccessExitStatus" not in service  # exit 4 (attention) must mark the unit failed
    timer = directives(UNITS / "deltasync@.timer")
    assert timer["Unit"] == ["deltasync@%i.service"] and timer["Persistent"] == ["true"]


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found (Debian's systemd package has it)")
    # An instance of each template; ExecStart must name an executable that exists here.
    deltasync = Path(sys.executable).parent / "deltasync"
    service = (UNITS / "deltasync@.service").read_text(encoding="utf-8")
    (tmp_path / "deltasync@patrons.service").write_text(
        service.replace("/usr/local/bin/deltasync", str(deltasync)), encoding="utf-8"
    )
    shutil.copy(UNITS / "deltasync@.timer", tmp_path / "deltasync@patrons.timer")
    result = subprocess.run(
        [analyze, "verify", "deltasync@patrons.service", "deltasync@patrons.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on an unknown key or a bad value, but says so: it must say nothing.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deltasync", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, f"deltasync, version {version('deltasync')}\n")

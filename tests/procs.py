"""deltasync commands as real processes, for tests of runs side by side (see paused.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PAUSED = Path(__file__).with_name("paused.py")
TIMEOUT = 120


@dataclass
class Finished:
    """How a process ended: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


class Command:
    """``python -m deltasync --config CONFIG ARGS`` running in the background."""

    def __init__(self, config: Path, *args: str, prefix: list[str] | None = None) -> None:
        argv = ["--config", str(config), *args]
        self.process = subprocess.Popen(
            [*(prefix or [sys.executable, "-m", "deltasync"]), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self, timeout: float = TIMEOUT) -> Finished:
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError(f"still running after {timeout} s: {out}\n{err}") from None
        return Finished(self.process.returncode, out, err)

    def kill(self) -> None:
        if self.running():
            self.process.kill()
        self.process.communicate()


class Paused(Command):
    """A command that stops at ``where`` (paused.py) until :meth:`go`."""

    def __init__(self, folder: Path, where: str, config: Path, *args: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ready = folder / f"{where}.ready"
        self.signal = folder / f"{where}.go"
        prefix = [sys.executable, str(PAUSED), where, str(self.ready), str(self.signal)]
        super().__init__(config, *args, prefix=prefix)

    def wait_ready(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if not self.running():
                done = self.finish()
                raise AssertionError(f"ended before pausing ({done.code}): {done.out}{done.err}")
            if time.monotonic() > deadline:
                raise AssertionError("never reached its pause")
            time.sleep(0.05)

    def go(self) -> None:
        self.signal.touch()


def wait_until(condition: object, timeout: float = 60, what: str = "condition") -> None:
    """Poll ``condition()`` until it is true."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)

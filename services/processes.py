"""Child processes that start, report ready, and stop without leaving orphans."""

import contextlib
import ctypes
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM the child when its parent dies, so nothing outlives a kill -9.

    Used as Popen's preexec_fn; a no-op where prctl is unavailable.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until_ready(
    name: str,
    url: str,
    process: subprocess.Popen[bytes],
    deadline: float,
    stop_requested: Callable[[], bool] = lambda: False,
) -> None:
    """Return once `url` answers 200, or as soon as a stop is requested.

    Raises RuntimeError if the process exits first or the monotonic `deadline` passes.
    """
    while time.monotonic() < deadline and not stop_requested():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    if not stop_requested():
        raise RuntimeError(f"{name} was not ready at {url} in time")


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], grace_seconds: float) -> None:
    """SIGTERM every process, wait up to `grace_seconds` in all, then SIGKILL what remains."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace_seconds
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RestartBackoff:
    """How long to wait before restarting a process that exited: 1 s, 2 s, 4 s … up to
    `cap_seconds`, so a crash loop neither spins nor gives up; back to the first delay once the
    process has stayed up `stable_seconds`."""

    first_seconds: float = 1.0
    cap_seconds: float = 30.0
    stable_seconds: float = 60.0
    _next_seconds: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_seconds = self.first_seconds

    def after_exit(self, up_seconds: float) -> float:
        """The delay before restarting a process that ran `up_seconds` before it exited."""
        if up_seconds >= self.stable_seconds:
            self._next_seconds = self.first_seconds
        delay = self._next_seconds
        self._next_seconds = min(delay * 2, self.cap_seconds)
        return delay

"""Jobs for the worker-pool tests: module-level, so a spawned worker imports them by name."""

from __future__ import annotations

import os
import signal
import time


def pid_and_env(name: str) -> tuple[int, str | None]:
    """The worker's process id and its value of environment variable `name`."""
    return os.getpid(), os.environ.get(name)


def die_on(job: str) -> int:
    """Kill this worker on job "die" (as an out-of-memory kill would); the pid otherwise."""
    if job == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def sleep_then_pid(path: str) -> int:
    """Write this worker's pid to `path`, then sleep far longer than any test waits."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
    return os.getpid()

"""Timing a command as a user sees it: a fresh process, from start to exit, with every
process it starts (a fork server and its workers, loky's workers, Beam's SDK workers).

:func:`run` samples the process tree every :data:`SAMPLE_S` seconds: CPU is
the sum of each process's last sampled user + system time (a process that
lives less than a sample is missed), memory the largest sum of resident set
sizes seen at once (RSS counts the pages processes share, such as the
libraries a fork server's children share, once per process).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SAMPLE_S = 0.05


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float
    returncode: int
    stdout: str
    stderr: str


class _TreeSampler:
    def __init__(self, pid: int):
        import psutil

        self._root = psutil.Process(pid)
        self._cpu: dict[int, float] = {}
        self.peak_rss = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._done.is_set():
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                return
            rss = 0
            for process in processes:
                try:
                    with process.oneshot():
                        rss += process.memory_info().rss
                        times = process.cpu_times()
                        self._cpu[process.pid] = times.user + times.system
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            self._done.wait(SAMPLE_S)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return sum(self._cpu.values())


def run(command: list[str], cwd: str | None = None, env: dict | None = None) -> Run:
    """Runs ``command`` (with this repository first on PYTHONPATH) and measures it."""
    env = dict(env or os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=cwd)
    sampler = _TreeSampler(process.pid)
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    cpu = sampler.stop()
    return Run(wall, cpu, sampler.peak_rss / 2**20, process.returncode, stdout, stderr)


def python(*args: str) -> list[str]:
    """A command line running this interpreter."""
    return [sys.executable, *args]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0))
    return f"{cpu}, {cores} cores available, Python {platform.python_version()}"


def loads() -> str:
    """The load average (1, 5, 15 minutes): how busy the (shared) machine was."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())

"""Worker processes for the CPU-bound jobs of beam_dsl's transforms (TRAIN's fits).

Beam's in-process runner runs a pipeline on one core. A transform whose work
splits into independent, CPU-heavy jobs (one model per key) hands them to a
:class:`WorkerPool`: processes forked by this process's fork server
(:mod:`multiprocessing`'s ``forkserver``), which imported what the jobs need
once. So a worker starts in milliseconds, shares those modules' memory, and
inherits nothing of the run's process: no threads, no locks, no open files
(such as the model store's lock of the run). Jobs and results travel pickled:
a job should be big (a key's rows) and its result small (metrics and a model
file's bytes).

Workers die with the process that made their pool, however it ends (kill -9
included): each holds the read end of a pipe that only that process holds
the write end of, and exits the moment the pipe closes. A killed run leaves
no process working, or holding files, behind.

Nothing here imports Beam: the fork server and the workers import this module.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import forkserver
from typing import Any

from beam_dsl.transforms.common import torch_guard

_CONTEXT = multiprocessing.get_context("forkserver")
_SERVER = threading.Lock()  # held while the fork server is being started
_started: list[bool] = []  # [True] once this process started its fork server


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def start_server(preload: Sequence[str], hide_torch: bool | None = None) -> None:
    """Starts this process's fork server, which imports the modules ``preload`` names,
    and returns at once (the imports go on in the server, beside this process's work).

    There is one server per process: the first call's modules are the ones
    preloaded, later calls do nothing. A worker imports what its server did
    not preload when a job first needs it. The server hides torch
    (:mod:`~beam_dsl.transforms.common.torch_guard`) where ``hide_torch`` says
    so, or (None) where this process hides it now.
    """
    with _SERVER:
        if _started:
            return
        modules = ["beam_dsl.transforms.common.server_exit", *preload]
        if torch_guard.hidden() if hide_torch is None else hide_torch:
            modules.insert(1, "beam_dsl.transforms.common.no_torch")
        _CONTEXT.set_forkserver_preload(modules)
        forkserver.ensure_running()
        _started.append(True)


def server_started() -> bool:
    """Whether this process started its fork server (workers start in milliseconds)."""
    return bool(_started)


class NotShippable(Exception):
    """A job that cannot run in a worker: it cannot be pickled, or a worker cannot import
    what it refers to (say, an estimator class defined in a script's ``__main__``)."""


def _run(payload: bytes) -> Any:
    """Runs a job, in a worker."""
    try:
        fn, args = pickle.loads(payload)
    except Exception as e:  # what the job refers to does not import here
        raise NotShippable(f"{type(e).__name__}: {e}") from None
    return fn(*args)


# Native thread pools a worker sizes (unless the environment sizes them already).
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(lifeline: Any, threads: int) -> None:
    """A worker's initializer.

    The worker exits at once when ``lifeline`` (the read end of a pipe whose
    write end only the pool's process holds) reaches its end. Native thread
    pools (OpenMP, BLAS) get ``threads`` threads, so that N workers of an
    estimator that uses them (HistGradientBoosting, LightGBM, XGBoost) share
    the cores instead of running N x cores threads; an environment that sets
    them decides instead.
    """

    def watch() -> None:
        try:
            lifeline.recv_bytes()
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="beam_dsl-lifeline", daemon=True).start()
    if not any(name in os.environ for name in _THREAD_VARIABLES):
        os.environ.update(dict.fromkeys(_THREAD_VARIABLES, str(threads)))
        from threadpoolctl import threadpool_limits  # scikit-learn's; for pools loaded already

        threadpool_limits(threads)


class WorkerPool:
    """``workers`` processes that run jobs, forked by :func:`start_server`'s server (which
    this starts with ``preload`` if no server runs yet).

    Processes start with the first jobs (the first waits while the server
    imports ``preload``). :meth:`submit` raises :class:`NotShippable` for a
    job that cannot be pickled; the job's future raises it when a worker
    cannot load the job, and ``BrokenProcessPool`` when a worker died (killed,
    out of memory).
    """

    def __init__(self, workers: int, preload: Sequence[str]):
        start_server(preload)
        lifeline, self._lifeline = _CONTEXT.Pipe(duplex=False)
        threads = max(1, cores() // workers)
        self._executor = ProcessPoolExecutor(
            workers, mp_context=_CONTEXT, initializer=_init_worker, initargs=(lifeline, threads)
        )
        self.workers = workers

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Runs ``fn(*args)`` in a worker; ``fn`` must be importable by name."""
        try:
            payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # a lambda, a lock, an open file...
            raise NotShippable(f"{type(e).__name__}: {e}") from None
        return self._executor.submit(_run, payload)

    def close(self) -> None:
        """Cancels the jobs not started, waits for the running ones and stops the workers."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._lifeline.close()

"""Worker processes for the CPU-bound jobs of beam_dsl's transforms (TRAIN's fits,
MODEL's predictions).

Beam's in-process runner runs a pipeline on one core. A transform whose work
splits into independent, CPU-heavy jobs (one model per key, one slice of rows
per prediction) hands them to :class:`Jobs`, which runs them in line or in a
:class:`WorkerPool` by one rule: processes forked by this process's fork server
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

import atexit
import logging
import multiprocessing
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import forkserver
from typing import Any

from beam_dsl.transforms.common import torch_guard

# Left to itself (no --workers), a transform runs its jobs in line and hands them to worker
# processes once running them in line has taken this long: less work does not repay
# starting them (their fork server imports pandas and scikit-learn: ~1.5 s of a core). The
# server starts half-way there, so that it imports while jobs still run in line.
POOL_AFTER_S = 3.0

_LOG = logging.getLogger(__name__)
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


E_WORKER_DIED = "E436"


def died(config: Any, doing: str, why: BaseException) -> Exception:
    """E436 for the transform of ``config`` (an IR config): a worker process ``doing`` a
    job died."""
    return config.error(
        E_WORKER_DIED, f"a worker process {doing} died ({why})",
        hint="workers die most often for lack of memory: run with fewer --workers "
        "(1 runs the work in the run's own process)",
    )


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

    Its processes start at once (the first job waits while the server imports
    ``preload``). :meth:`submit` raises :class:`NotShippable` for a
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
        # The executor starts a process per job submitted while none is idle: a trivial
        # job per worker starts them all now (1-2 ms each), so the first real jobs spread
        # over all of them instead of queueing at the first one up.
        for _ in range(workers):
            self._executor.submit(int)
        self.workers = workers
        _OPEN.add(self)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Runs ``fn(*args)`` in a worker; ``fn`` must be importable by name."""
        try:
            payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # a lambda, a lock, an open file...
            raise NotShippable(f"{type(e).__name__}: {e}") from None
        return self._executor.submit(_run, payload)

    def close(self, wait: bool = True) -> None:
        """Cancels the jobs not started and stops the workers: after the running jobs, or
        where not ``wait``, at once, running jobs and all."""
        _OPEN.discard(self)
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._lifeline.close()  # each worker exits when it sees the pipe close


# Pools not closed yet: a run that failed left them so (Beam calls no finish_bundle or
# teardown after a failure).
_OPEN: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _abandon_open_pools() -> None:
    """At exit, stops the workers of pools still open: nothing wants their jobs any more,
    and multiprocessing's exit handler, which runs after this one (registered earlier),
    would wait for them forever (they wait for work; the executor's own exit hook, run
    by the interpreter's teardown, does not run where ``python -m beam_dsl`` ends with
    ``os._exit``)."""
    for pool in list(_OPEN):
        pool.close(wait=False)


atexit.register(_abandon_open_pools)


class Jobs:
    """A transform's jobs, each run in this process or in a :class:`WorkerPool`, by one rule.

    ``processes`` 1 runs every job in line; N > 1 runs them in N workers from
    the first; None (the run leaves it to beam_dsl) runs them in one worker per
    core once jobs in line have taken :data:`POOL_AFTER_S` (the fork server
    starts half-way), or, where ``eager``, from the first job if the fork
    server runs already (``beam_dsl run`` started it for TRAIN). Where jobs ran
    in line before, ``warm_up`` (a function and its arguments, such as loading
    a model) runs once per worker as the pool starts, and jobs go on in line
    until it is done. A job that cannot go to a worker (:class:`NotShippable`)
    runs in line, and so do the jobs after it, with a warning that starts with
    ``what``.
    """

    def __init__(self, processes: int | None, preload: Sequence[str], what: str,
                 eager: bool = False, warm_up: tuple[Callable[..., Any], tuple] | None = None):
        self._processes, self._preload, self._what = processes, list(preload), what
        self._eager, self._warm_up = eager, warm_up
        self._warming: list[Future] = []  # the pool's warm-ups, while any is at work
        self._pool: WorkerPool | None = None
        self._in_line = (processes or cores()) == 1
        self._in_line_s = 0.0  # spent running jobs in line

    @property
    def workers(self) -> int:
        """The worker processes at work (1 while jobs run in line)."""
        return self._pool.workers if self._pool is not None else 1

    @property
    def in_workers_from_start(self) -> bool:
        """Whether the jobs go to workers from the first (:meth:`_from_start`), none having
        run in line."""
        return not self._in_line and self._from_start()

    def submit(self, fn: Callable[..., Any], *args: Any,
               here: Callable[..., Any] | None = None) -> tuple[Future, bool]:
        """``fn(*args)`` started in a worker (its future, and True) or run here (a future
        that is done, and False; ``here(*args)`` instead where given: the same work with
        what this process holds, such as a loaded model). A job run here raises as it
        does."""
        pool = self._worker_pool()
        if pool is not None:
            try:
                return pool.submit(fn, *args), True
            except NotShippable as e:
                self.run_in_line(e)
        start = time.monotonic()
        done: Future = Future()
        try:
            done.set_result((here or fn)(*args))
        finally:
            self._in_line_s += time.monotonic() - start
        return done, False

    def run_in_line(self, why: Exception) -> None:
        """Runs the jobs still to come in this process (one could not go to a worker)."""
        _LOG.warning("%s in this process: %s", self._what, why)
        self._in_line = True

    def close(self) -> None:
        """Stops the workers, if any started (after the jobs at work)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _worker_pool(self) -> WorkerPool | None:
        """The pool for the next job (started when first due), or None: run it here."""
        if self._pool is None and not self._in_line and self._pool_due():
            self._pool = WorkerPool(self._processes or cores(), self._preload)
            if self._warm_up is not None and self._in_line_s:
                fn, args = self._warm_up
                try:
                    self._warming = [self._pool.submit(fn, *args)
                                     for _ in range(self._pool.workers)]
                except NotShippable:
                    pass  # so is the next job, which then runs in line
        if self._warming and not all(w.done() for w in self._warming):
            return None  # a job now would wait for the warm-up: run it here meanwhile
        self._warming = []
        return None if self._in_line else self._pool

    def _from_start(self) -> bool:
        """A set number of processes (more than one), or, where ``eager``, a fork server
        that runs already when the first job comes."""
        return self._processes is not None or (
            self._eager and not self._in_line_s and server_started())

    def _pool_due(self) -> bool:
        if self._from_start():
            return True
        if self._in_line_s >= POOL_AFTER_S / 2:
            start_server(self._preload)
        return self._in_line_s >= POOL_AFTER_S

"""MODEL predicts in worker processes (``beam_dsl run --workers N``) with the same rows out,
in the same order, as in one process; the rule that picks in line or workers
(workers.Jobs) is TRAIN's too.

Runs are real: ``beam_dsl run`` over a pipeline.yaml in this process, a random forest
saved with skops and loaded through MODEL's loading code in every worker.
"""

from __future__ import annotations

import json
import os
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import skops.io
from conftest import run_listing_heavy_imports
from sklearn.ensemble import RandomForestClassifier

from beam_dsl.cli import main
from beam_dsl.run_start import worker_options
from beam_dsl.runner import run_pipeline
from beam_dsl.transforms.common import workers

SPEC = """
MODEL scored
  SKLEARN 'forest.{suffix}'
  {trust}
  INPUT x1, x2, x3
  OUTPUT predicted
  BATCH 1 TO 50;
"""

PIPELINE = """
specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {{type: ReadFromCsv, name: rows, config: {{path: rows.csv}}}}
    - {{type: scored, input: rows{config}}}
    - {{type: WriteToJson, name: main, input: scored.main, config: {{path: out/main}}}}
    - {{type: WriteToJson, name: errors, input: scored.errors, config: {{path: out/errors}}}}
"""


def _rows(n: int = 700) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"id": np.arange(n), "x1": rng.normal(size=n).round(4),
                          "x2": rng.normal(size=n).round(4), "x3": rng.integers(0, 9, n)})
    frame["x2"] = frame["x2"].astype(object)
    # Rows that do not fit the schema ReadFromCsv infers from the first 100 rows.
    frame.loc[[250, 400, 699], "x2"] = "not a number"
    return frame


def _workdir(path, suffix: str = "skops", estimator=None) -> str:
    """A folder with rows.csv, a fitted forest saved as forest.<suffix>, the spec and the
    pipeline."""
    path.mkdir(parents=True)
    rows = _rows()
    rows.to_csv(path / "rows.csv", index=False)
    numeric = rows[rows.x2 != "not a number"].astype({"x2": float})
    labels = np.where(numeric.x1 + numeric.x2 > 0, "yes", "no")
    model = (estimator or RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0))
    model.fit(numeric[["x1", "x2", "x3"]], labels)
    if suffix == "skops":
        skops.io.dump(model, path / "forest.skops")
        trust = "TRUST 'sklearn.tree._tree.Tree'"
        config = ""
    else:
        import pickle

        (path / f"forest.{suffix}").write_bytes(pickle.dumps(model))
        trust, config = "", ", config: {allow_pickle: true}"
    (path / "spec.bdsl").write_text(SPEC.format(suffix=suffix, trust=trust))
    (path / "pipeline.yaml").write_text(PIPELINE.format(config=config))
    return str(path)


def _lines(root: str, prefix: str) -> list[dict]:
    rows = []
    out = os.path.join(root, "out")
    for name in sorted(os.listdir(out)):
        if name.startswith(prefix):
            with open(os.path.join(out, name)) as f:
                rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def _run(root: str, *flags: str) -> tuple[list[dict], list[dict]]:
    assert main(["run", "-q", *flags, os.path.join(root, "pipeline.yaml")]) == 0
    return _lines(root, "main"), _lines(root, "errors")


def test_model_gives_the_same_rows_in_the_same_order_with_one_and_two_workers(tmp_path):
    root = _workdir(tmp_path / "w")
    one = _run(root, "--workers", "1")
    summary = run_pipeline(os.path.join(root, "pipeline.yaml"), beam_args=worker_options(2),
                           progress=None)
    two = _lines(root, "main"), _lines(root, "errors")

    assert one == two
    main_rows, errors = two
    assert [r["id"] for r in main_rows] == [i for i in range(700) if i not in (250, 400, 699)]
    assert {r["predicted"] for r in main_rows} == {"yes", "no"}
    assert len(errors) == 3
    # Every slice went to a worker (the counter counts rows).
    assert summary.counters["scored.predicted_in_workers"] == 697


DYING = '''
import multiprocessing
import os
import signal

from sklearn.tree import DecisionTreeClassifier


class DiesInWorkers(DecisionTreeClassifier):
    """Killed like the kernel's out-of-memory killer would, when it predicts in a worker."""

    def predict(self, X):
        if multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(X)
'''


def test_a_worker_that_dies_ends_the_run_with_e436(tmp_path, monkeypatch, capsys):
    (tmp_path / "dying_models.py").write_text(textwrap.dedent(DYING))
    monkeypatch.syspath_prepend(str(tmp_path))
    from dying_models import DiesInWorkers

    root = _workdir(tmp_path / "w", suffix="pkl", estimator=DiesInWorkers(max_depth=3))
    assert main(["run", "-q", "--workers", "2", os.path.join(root, "pipeline.yaml")]) == 1
    err = capsys.readouterr().err
    assert "error[E436]" in err and "a worker process predicting died" in err


@pytest.mark.parametrize("flags, heavy", [([], "[]"), (["--workers", "2"], "[]"),
                                          (["--workers", "1"], "['sklearn', 'skops'")])
def test_a_run_predicting_in_workers_imports_no_scikit_learn(tmp_path, flags, heavy):
    """Left to itself (one worker per core) or with --workers 2, the workers load the
    model: the run's process imports neither scikit-learn nor skops (a MODEL the
    pipeline does not use does not count), and they load on another core while it
    imports Beam."""
    root = _workdir(tmp_path / "w")
    with open(os.path.join(root, "spec.bdsl"), "a") as f:
        f.write("\nMODEL unused SKLEARN 'forest.skops' INPUT x1 OUTPUT y;\n")
    done = run_listing_heavy_imports(root, *flags, "pipeline.yaml")
    assert f"EXIT 0 HEAVY {heavy}" in done.stdout, done.stderr[-3000:]
    assert len(_lines(root, "main")) == 697


@pytest.mark.parametrize("workers_flag", ["1", "2"])
def test_a_model_file_that_does_not_load_ends_the_run_as_in_one_process(
        tmp_path, capsys, workers_flag):
    root = _workdir(tmp_path / "w")
    with open(os.path.join(root, "forest.skops"), "r+b") as f:  # broken bytes
        f.seek(40)
        f.write(b"\x00" * 64)
    assert main(["run", "-q", "--workers", workers_flag, os.path.join(root, "pipeline.yaml")]) == 1
    err = capsys.readouterr().err
    assert "error[E4" in err and "forest.skops" in err and "Traceback" not in err


def _pid_and(x: int) -> tuple[int, int]:
    return os.getpid(), x


@pytest.mark.parametrize("processes", [1, 2, None])
def test_jobs_run_in_line_or_in_workers_by_the_rule(processes, monkeypatch):
    monkeypatch.setattr(workers, "POOL_AFTER_S", 1e-9 if processes is None else 1e9)
    jobs = workers.Jobs(processes, [], "test jobs")
    try:
        started = [jobs.submit(_pid_and, i) for i in range(6)]
        results = [future.result() for future, _ in started]
    finally:
        jobs.close()
    assert [x for _, x in results] == list(range(6))
    here = [pid == os.getpid() for pid, _ in results]
    assert here == [in_worker is False for _, in_worker in started]
    if processes == 1:
        assert all(here)
    elif processes == 2:
        assert not any(here)
    else:  # in line first, in workers once that has taken POOL_AFTER_S
        assert here[0] and not any(here[1:])


def test_eager_jobs_go_to_workers_from_the_first_where_the_server_runs(monkeypatch):
    monkeypatch.setattr(workers, "POOL_AFTER_S", 1e9)
    monkeypatch.setattr(workers, "server_started", lambda: True)  # beam_dsl run started it
    jobs = workers.Jobs(None, [], "test jobs", eager=True, warm_up=(time.sleep, (9,)))
    assert jobs.in_workers_from_start
    try:
        started = [jobs.submit(_pid_and, i) for i in range(3)]
        assert [pid != os.getpid() for pid, _ in (f.result() for f, _ in started)] == [True] * 3
    finally:
        jobs.close()


def test_jobs_run_in_line_while_the_workers_warm_up(monkeypatch):
    monkeypatch.setattr(workers, "POOL_AFTER_S", 1e-9)
    jobs = workers.Jobs(None, [], "test jobs", warm_up=(time.sleep, (0.5,)))
    try:
        first = [jobs.submit(_pid_and, i) for i in range(3)]  # the pool starts at the second
        time.sleep(1.5)  # the warm-ups are done
        later = [jobs.submit(_pid_and, i) for i in range(3)]
        results = [future.result() for future, _ in first + later]
    finally:
        jobs.close()
    here = [pid == os.getpid() for pid, _ in results]
    assert here == [True] * 3 + [False] * 3


def test_a_job_that_cannot_be_pickled_runs_in_line_and_so_do_the_next(caplog):
    jobs = workers.Jobs(2, [], "test jobs")
    try:
        future, in_worker = jobs.submit(lambda: os.getpid())
        later, later_in_worker = jobs.submit(_pid_and, 1)
    finally:
        jobs.close()
    assert future.result() == os.getpid() and not in_worker and not later_in_worker
    assert later.result() == (os.getpid(), 1)
    assert "test jobs in this process" in caplog.text

"""Worker processes (``beam_dsl run --workers N``): TRAIN fits keys in them, with the
same results as in one process, and they never outlive the run.

Runs are real: ``beam_dsl run`` over a pipeline.yaml (in this process, or as a
subprocess where it must be killed), models written through the model store,
reloaded and asked for predictions.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from beam_dsl.cli import main
from beam_dsl.run_start import worker_options
from beam_dsl.runner import run_pipeline
from beam_dsl.transforms.training.modelstore import ModelStore, key_id, load_model

KEYS = ("north", "south", "east", "west", "up", "down")
FEATURES = ["x1", "x2", "colour"]

SPEC = """
TRAIN by_region
  PER region
  FEATURES x1, x2, colour
  LABEL label
  USING {estimator}(max_depth = 5, random_state = 0)
  HOLDOUT 25% SEED 3
  METRICS accuracy, f1
  SAVE TO 'models/regions/{{key}}.skops';

MODEL served
  SKLEARN 'models/regions/{{key}}.skops'
  PER region
  INPUT x1, x2, colour
  OUTPUT predicted;
"""

TRAIN_PIPELINE = """
specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: rows, config: {path: rows.csv}}
    - {type: by_region, input: rows}
    - {type: WriteToJson, input: by_region, config: {path: out/metrics}}
"""

SERVE_PIPELINE = """
specs: [spec.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: rows, config: {path: rows.csv}}
    - {type: served, input: rows}
    - {type: WriteToJson, input: served, config: {path: out/served}}
"""


def _rows(n_per_key: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({
        "region": np.repeat(KEYS, n_per_key),
        "x1": rng.normal(size=n_per_key * len(KEYS)).round(4),
        "x2": rng.integers(0, 50, n_per_key * len(KEYS)),
        "colour": rng.choice(["red", "green", "blue"], n_per_key * len(KEYS)),
    })
    signal_ = frame.x1 + 0.05 * frame.x2 + (frame.colour == "red") + rng.normal(size=len(frame))
    frame["label"] = np.where(signal_ > 1.2, "yes", "no")
    return frame


def _workdir(path, estimator: str = "sklearn.tree.DecisionTreeClassifier") -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "spec.bdsl").write_text(SPEC.format(estimator=estimator))
    (path / "train.yaml").write_text(TRAIN_PIPELINE)
    (path / "serve.yaml").write_text(SERVE_PIPELINE)
    _rows().to_csv(path / "rows.csv", index=False)
    return str(path)


def _json_rows(root: str, prefix: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(root, "out", f"{prefix}-*"))):
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def _train(root: str, workers: int):
    """One TRAIN run with ``workers`` processes: (its summary, metrics rows by key,
    predictions of each published model on every row, the manifest)."""
    summary = run_pipeline(os.path.join(root, "train.yaml"), beam_args=worker_options(workers),
                           progress=None)
    metrics = {r["region"]: r for r in _json_rows(root, "metrics")}
    store = ModelStore(os.path.join(root, "models", "regions", "{key}.skops"))
    manifest = store.manifest()
    version = store.current()
    probe = _rows()[FEATURES]
    predictions = {
        key_id(m["key"]): load_model(os.path.join(version, m["file"]),
                                     trusted=m["trusted_types"]).predict(probe).tolist()
        for m in manifest["models"]
    }
    return summary, metrics, predictions, manifest


def _comparable(metrics: dict) -> dict:
    return {k: {c: v for c, v in r.items() if c != "model_uri"} for k, r in metrics.items()}


def test_train_and_model_give_the_same_results_with_one_and_two_workers(tmp_path):
    one = _workdir(tmp_path / "one")
    two = _workdir(tmp_path / "two")
    summary_1, metrics_1, predictions_1, manifest_1 = _train(one, workers=1)
    summary_2, metrics_2, predictions_2, manifest_2 = _train(two, workers=2)

    # Every key went to a worker with --workers 2, none with --workers 1.
    assert summary_2.counters["by_region.fitted_in_workers"] == len(KEYS)
    assert summary_1.counters.get("by_region.fitted_in_workers", 0) == 0
    assert sorted(metrics_1) == sorted(KEYS)
    assert _comparable(metrics_1) == _comparable(metrics_2)
    assert predictions_1 == predictions_2 and len(predictions_1) == len(KEYS)
    entries = [
        {k: v for k, v in m.items() if k not in ("file", "sha256")}
        for m in (manifest_1["models"], manifest_2["models"]) for m in m
    ]
    assert entries[: len(KEYS)] == entries[len(KEYS):]
    assert all(m["trusted_types"] == ["sklearn.tree._tree.Tree"] for m in manifest_2["models"])

    # MODEL serves the same predictions with either setting.
    served = []
    for root, workers in ((one, 1), (two, 2)):
        assert main(["run", "-q", "--workers", str(workers), os.path.join(root, "serve.yaml")]) == 0
        rows = _json_rows(root, "served")
        served.append(sorted((r["region"], r["x1"], r["x2"], r["predicted"]) for r in rows))
    assert served[0] == served[1] and len(served[0]) == len(_rows())


def test_the_last_chunk_split_over_the_workers_gives_the_same_models(tmp_path, monkeypatch):
    """Prepare's frames (the read feeds a MapToFields too, so TRAIN does not read the file
    itself): the last chunk in pieces, one per worker."""
    from beam_dsl.transforms.training import prepare

    _, metrics_1, predictions_1, _ = _train(_workdir(tmp_path / "one"), workers=1)
    monkeypatch.setattr(prepare, "MIN_PIECE_ROWS", 100)  # 2,400 rows: two pieces
    root = _workdir(tmp_path / "two")
    with open(os.path.join(root, "train.yaml"), "a") as f:
        f.write("    - {type: MapToFields, input: rows, config: {language: python,"
                " fields: {r: region}}}\n")
    summary, metrics_2, predictions_2, _ = _train(root, workers=2)
    assert summary.counters["by_region.rows_in"] == len(_rows())
    assert _comparable(metrics_1) == _comparable(metrics_2)
    assert predictions_1 == predictions_2


def test_workers_must_be_a_positive_count(tmp_path, capsys):
    root = _workdir(tmp_path)
    assert main(["run", "--workers", "0", os.path.join(root, "train.yaml")]) == 2
    assert "--workers: expected a whole number of at least 1, not '0'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("qualname", "why"),
    [("Tree", "No module named 'estimators_made_here'"),  # pickles here, not in a worker
     ("made.<locals>.Tree", "Can't pickle local object")],  # does not pickle at all
)
def test_an_estimator_workers_cannot_load_is_fitted_in_the_run(
    tmp_path, monkeypatch, caplog, qualname, why
):
    """A class that exists only in this process (not importable by name) cannot go to a
    worker: its keys are fitted here, with the same results as a plain tree's."""
    from sklearn.tree import DecisionTreeClassifier

    module = types.ModuleType("estimators_made_here")

    class Tree(DecisionTreeClassifier):
        pass

    Tree.__module__, Tree.__qualname__ = module.__name__, qualname
    module.Tree = Tree
    monkeypatch.setitem(sys.modules, module.__name__, module)
    root = _workdir(tmp_path / "made_here", estimator="estimators_made_here.Tree")
    summary, metrics, predictions, _ = _train(root, workers=2)
    _, expected, expected_predictions, _ = _train(_workdir(tmp_path / "plain"), workers=1)
    assert summary.counters.get("by_region.fitted_in_workers", 0) == 0
    assert _comparable(metrics) == _comparable(expected)
    assert predictions == expected_predictions
    assert "TRAIN by_region fits its keys in this process" in caplog.text and why in caplog.text


DYING = '''
import multiprocessing
import os
import signal

from sklearn.tree import DecisionTreeClassifier


class DiesInWorkers(DecisionTreeClassifier):
    """Killed like the kernel's out-of-memory killer would, when it fits in a worker."""

    def fit(self, X, y, **kwargs):
        if multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(X, y, **kwargs)
'''


def test_a_worker_that_dies_ends_the_run_with_e436(tmp_path, monkeypatch, capsys):
    (tmp_path / "dying_estimators.py").write_text(textwrap.dedent(DYING))
    monkeypatch.syspath_prepend(str(tmp_path))
    root = _workdir(tmp_path / "work", estimator="dying_estimators.DiesInWorkers")
    assert main(["run", "-q", "--workers", "2", os.path.join(root, "train.yaml")]) == 1
    err = capsys.readouterr().err
    assert "error[E436]" in err and "a worker process fitting key" in err
    assert ModelStore(os.path.join(root, "models", "regions", "{key}.skops")).current() is None


def _processes_with(marker: str) -> list[int]:
    """The processes whose environment holds ``marker`` (the run, its fork server, its
    workers: they all inherit the run's environment)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_die_with_a_killed_run(tmp_path):
    """kill -9 of the run (at its second model save, workers busy or queued) leaves no
    fork server or worker behind; nor does a run that ends normally."""
    root = _workdir(tmp_path)
    marker = f"BEAM_DSL_TEST_RUN={os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": REPO, marker.split("=")[0]: marker.split("=")[1]}
    command = [sys.executable, "-m", "beam_dsl", "run", "-q", "--workers", "2", "train.yaml"]
    for crash_at, returncode in (("saved:2", -signal.SIGKILL), (None, 0)):
        env.pop("BEAM_DSL_CRASH_AT", None)
        if crash_at:
            env["BEAM_DSL_CRASH_AT"] = crash_at
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == returncode, done.stderr
        deadline = time.monotonic() + 10
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_with(marker) == []


SERVER_EXIT = textwrap.dedent("""
    import atexit
    import sys

    atexit.register(lambda: open(sys.argv[1], "w").close())  # the interpreter's own exit
    import beam_dsl.transforms.common.server_exit  # noqa: E402,F401
""")


def test_the_fork_server_exits_without_the_interpreters_teardown(tmp_path):
    """The fork server's first module ends it with os._exit when it would exit: the exit
    handlers registered before it (and the teardown after them) never run, so the
    run's stdout and stderr close the moment it is gone."""
    flag = tmp_path / "teardown-ran"
    done = subprocess.run([sys.executable, "-c", SERVER_EXIT, str(flag)],
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True)
    assert done.returncode == 0 and not flag.exists()
    assert subprocess.run([sys.executable, "-c", SERVER_EXIT.replace("import beam_dsl", "#"),
                           str(flag)]).returncode == 0 and flag.exists()


OPEN_POOL_EXIT = textwrap.dedent("""
    import atexit
    import os

    from beam_dsl.transforms.common import workers

    if __name__ == "__main__":
        pool = workers.WorkerPool(2, [])
        assert pool.submit(int, "7").result() == 7
        atexit._run_exitfuncs()  # python -m beam_dsl's quick exit
        os._exit(0)
""")


def test_a_pool_left_open_by_a_failed_run_does_not_hold_the_exit(tmp_path):
    """A run that fails midway leaves its pools open (Beam calls no finish_bundle after a
    failure); at exit their workers stop, where multiprocessing's exit handler waited for
    them forever (``python -m beam_dsl`` ends without the interpreter's teardown, which
    would have stopped them)."""
    script = tmp_path / "script.py"
    script.write_text(OPEN_POOL_EXIT)
    done = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

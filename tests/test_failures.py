"""A failed run is the pipeline's mistake (exit 1, E460 at its transform) or a beam_dsl bug
(exit 123, with the trace): never the other way round."""

import io
import os
import subprocess
import sys

from conftest import REPO

from beam_dsl.cli import main

ROWS = "a,b\n1,2\n3,0\n"

FAILING_MAP = """
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: rows, config: {path: rows.csv}}
    - type: MapToFields
      name: ratio
      input: rows
      config:
        language: python
        fields:
          r: {callable: "lambda row: row.a / row.b"}
    - {type: WriteToJson, input: ratio, config: {path: out/r}}
"""

TRAIN = """
TRAIN t FEATURES a LABEL b
  USING sklearn.tree.DecisionTreeRegressor(max_depth = 2)
  SAVE TO 'models/t.skops';
"""

TRAIN_PIPELINE = """
specs: [t.bdsl]
pipeline:
  type: composite
  transforms:
    - {type: ReadFromCsv, name: rows, config: {path: rows.csv}}
    - {type: t, input: rows}
"""


def _run(tmp_path, pipeline: str, capsys) -> tuple[int, str]:
    (tmp_path / "rows.csv").write_text(ROWS)
    (tmp_path / "pipeline.yaml").write_text(pipeline)
    (tmp_path / "t.bdsl").write_text(TRAIN)
    code = main(["run", str(tmp_path / "pipeline.yaml"), "-q"], out=io.StringIO())
    return code, capsys.readouterr().err


def test_a_failure_in_the_users_own_code_is_exit_1_at_its_transform(tmp_path, capsys):
    code, err = _run(tmp_path, FAILING_MAP, capsys)
    assert code == 1
    assert "pipeline.yaml:6:13: error[E460]: the pipeline failed in ratio: " \
        "ZeroDivisionError" in err
    assert "internal error" not in err


def test_a_failure_inside_beam_dsl_is_an_internal_error(tmp_path):
    """A bug planted in TRAIN's fitting (in a subprocess: Beam caches DoFns per process)."""
    (tmp_path / "rows.csv").write_text(ROWS)
    (tmp_path / "pipeline.yaml").write_text(TRAIN_PIPELINE)
    (tmp_path / "t.bdsl").write_text(TRAIN)
    script = (
        "import sys\n"
        "from beam_dsl.transforms.training import transform\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('a bug in beam_dsl')\n"
        "transform.fit_key = broken\n"
        "from beam_dsl.cli import main\n"
        "sys.exit(main(['run', 'pipeline.yaml', '-q']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode == 123, result.stderr
    assert "a bug in beam_dsl" in result.stderr and "internal error" in result.stderr


def test_the_pipeline_runs_when_nothing_fails(tmp_path, capsys):
    code, err = _run(tmp_path, TRAIN_PIPELINE, capsys)
    assert code == 0, err
    assert os.path.islink(tmp_path / "models" / "t.skops")


def _fails_in_a_worker(fn, *args) -> BaseException:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
        try:
            pool.submit(fn, *args).result()
        except Exception as exc:  # noqa: BLE001 - the exception is what the test reads
            return exc
    raise AssertionError("the job did not fail")


def test_a_failure_in_a_worker_process_is_told_apart_by_the_workers_traceback():
    """TRAIN fits in worker processes; their exceptions reach the run with the worker's
    traceback as text only. A failure inside beam_dsl's code there is still beam_dsl's
    (exit 123), one in code beam_dsl did not call is the pipeline's (E460)."""
    import json

    from beam_dsl.failures import raised_by_beam_dsl
    from beam_dsl.transforms.common.rows import rows_to_frame

    assert raised_by_beam_dsl(_fails_in_a_worker(rows_to_frame, 5, ["a"]))
    assert not raised_by_beam_dsl(_fails_in_a_worker(json.loads, "{"))

"""Shared pytest setup: the --update-goldens flag and small helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def pytest_addoption(parser):
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite golden files under tests/golden from the current output",
    )


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")


def check_golden(path: str, actual: str, update: bool) -> None:
    """Compares ``actual`` with the golden file; a missing golden fails unless updating."""
    if update:
        with open(path, "w", encoding="utf-8") as f:
            f.write(actual)
        return
    if not os.path.exists(path):
        pytest.fail(f"missing golden file {path}; run pytest --update-goldens to create it")
    with open(path, encoding="utf-8") as f:
        expected = f.read()
    assert actual == expected, f"{path} differs; run pytest --update-goldens if the change is right"


_HEAVY_RUN = textwrap.dedent("""
    import sys

    from beam_dsl.cli import main

    if __name__ == "__main__":
        code = main(["run", "-q", *sys.argv[1:]])
        heavy = ("sklearn", "skops", "scipy", "joblib")
        print("EXIT", code, "HEAVY", [m for m in heavy if m in sys.modules])
""")


def run_listing_heavy_imports(cwd, *args: str) -> subprocess.CompletedProcess:
    """``beam_dsl run -q *args`` in a fresh interpreter in ``cwd``, from a script with the
    ``__main__`` guard worker processes need; its stdout ends with ``EXIT <code> HEAVY
    [...]``: which of scikit-learn, skops, scipy and joblib the run's process imported."""
    with open(os.path.join(cwd, "run.py"), "w") as f:
        f.write(_HEAVY_RUN)
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": REPO})

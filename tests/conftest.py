"""Shared pytest setup: the --update-goldens flag and small helpers."""

from __future__ import annotations

import os

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

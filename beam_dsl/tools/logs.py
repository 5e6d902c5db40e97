"""Logging during ``run`` and ``test``: what stock Beam YAML shows, without Beam's noise.

``python -m apache_beam.yaml.main`` sets the root logger to INFO, so
``LogForTesting`` (which logs through the root logger) prints its elements as
``INFO:root:{...}`` on standard error. beam_dsl does the same, with the same
format, but unless ``-v`` it drops what Beam itself logs (the "apitools not
found" and "Could not load ML transform module" warnings of every run,
"Expanding ..." lines, runner start-up, and the traceback it logs when a
transform fails: the failure reaches the CLI, which reports it as one coded
line) and what other installed libraries log below WARNING. Records from
LogForTesting, from the user's own code and from beam_dsl pass as under
stock Beam.

Beam logs some of those warnings while it is imported, so this is entered
before the first ``import apache_beam``; it imports no Beam itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sysconfig
from collections.abc import Iterator

_LOG_FOR_TESTING = ("log_and_return", os.path.join("apache_beam", "yaml", "yaml_provider.py"))


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    locations = spec.submodule_search_locations if spec else None
    return os.path.join(list(locations)[0], "") if locations else None


class _Quiet(logging.Filter):
    """Drops Beam's own records and other libraries' below WARNING."""

    def __init__(self) -> None:
        super().__init__()
        self.beam = _package_dir("apache_beam")
        paths = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
        self.libraries = tuple(os.path.join(p, "") for p in paths)

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname or ""
        if record.funcName == _LOG_FOR_TESTING[0] and path.endswith(_LOG_FOR_TESTING[1]):
            return True
        if self.beam and path.startswith(self.beam):
            return False
        if path.startswith(self.libraries):
            return record.levelno >= logging.WARNING
        return True


@contextlib.contextmanager
def run_logging(verbose: bool = False) -> Iterator[None]:
    """Root logger at INFO with stock Beam's format on standard error, for one run."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    if not verbose:
        handler.addFilter(_Quiet())
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)

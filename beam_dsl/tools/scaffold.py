"""``beam_dsl init DIR``: a new project that runs at once.

The files come from ``beam_dsl/tools/templates/init`` (package data): a spec
(one TRAIN per key), a pipeline.yaml that reads the sample CSV and writes
the metrics, skipped keys and bad rows, with a ``tests:`` block that passes
under ``beam_dsl test``, the sample data and a README of the commands; and
the JSON Schema of pipeline.yaml, which its first line points editors at.
"""

from __future__ import annotations

import errno
import os
from importlib import resources
from importlib.abc import Traversable

TEMPLATE = "templates/init"
SCHEMA = "pipeline.schema.json"


def _files(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith((".", "__")):
            continue
        if entry.is_dir():
            out.extend(_files(entry, f"{prefix}{entry.name}/"))
        else:
            out.append((prefix + entry.name, entry))
    return out


def init(directory: str) -> list[str]:
    """Writes the starter project into ``directory`` (new or empty); returns its files."""
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise FileExistsError(errno.EEXIST, "not an empty folder", directory)
    written = []
    for relative, entry in _files(resources.files("beam_dsl.tools").joinpath(TEMPLATE)):
        target = os.path.join(directory, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(entry.read_bytes())
        written.append(relative)
    schema = resources.files("beam_dsl.schemas").joinpath(SCHEMA).read_bytes()
    with open(os.path.join(directory, SCHEMA), "wb") as f:
        f.write(schema)
    return sorted([*written, SCHEMA])

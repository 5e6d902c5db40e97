"""fmt, graph, init, schema and report start fast: they import no Beam, scikit-learn
or torch (like lint and compile)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_tools_import_no_heavy_libraries(tmp_path):
    golden = os.path.join(REPO, "tests", "golden")
    spec = os.path.join(golden, "fmt", "identity.bdsl")
    pipeline = os.path.join(golden, "compile", "language_md", "pipeline.yaml")
    project = str(tmp_path / "project")
    script = (
        "import io, sys\n"
        "from beam_dsl.cli import main\n"
        f"assert main(['fmt', '--check', {spec!r}], out=io.StringIO()) == 0\n"
        f"assert main(['graph', {pipeline!r}, '--format', 'dot'], out=io.StringIO()) == 0\n"
        "assert main(['schema'], out=io.StringIO()) == 0\n"
        f"assert main(['init', {project!r}], out=io.StringIO()) == 0\n"
        f"assert main(['report', {project + '/pipeline.yaml'!r}, '-o', {project + '/r.html'!r}],"
        " out=io.StringIO()) == 0\n"
        "heavy = ('apache_beam', 'sklearn', 'torch', 'transformers', 'skops')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout

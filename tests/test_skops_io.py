"""beam_dsl imports skops with torch, dask and pytest hidden
(beam_dsl/transforms/common/skops_io.py): skops must trust exactly the types it trusts
when imported plainly, and nothing stays hidden."""

import json
import subprocess
import sys

# What skops trusts by default (the lists skops.io._trusted_types builds on import), what
# the walk left imported, and whether anything is still hidden after the import.
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
from skops.io import _trusted_types as t
names = {n: sorted(map(str, v)) for n, v in vars(t).items()
         if n.isupper() and n.endswith("NAMES")}
loaded = sorted(m for m in ("torch", "dask", "pytest") if m in sys.modules)
hiding = [f.packages for f in sys.meta_path if type(f).__name__ == "Hiding"]
print(json.dumps({"names": names, "loaded": loaded, "hiding": hiding}))
"""


def _probe(module: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True,
                         text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def test_skops_trusts_the_same_types_with_the_walked_packages_hidden():
    plain, lean = _probe("skops.io"), _probe("beam_dsl.transforms.common.skops_io")
    assert plain["names"]["SKLEARN_ESTIMATOR_TYPE_NAMES"]  # the walk found estimators
    assert lean["names"] == plain["names"]
    assert lean["loaded"] == [] and lean["hiding"] == []
    # Where they are installed, the plain import loads them: hiding them is the point.
    installed = [m for m in ("dask", "pytest", "torch")
                 if subprocess.run([sys.executable, "-c", f"import {m}"]).returncode == 0]
    assert plain["loaded"] == installed


def test_the_packages_hidden_for_the_import_load_afterwards():
    code = ("import beam_dsl.transforms.common.skops_io, dask.array, pytest; "
            "import sklearn.externals.array_api_compat.dask.array")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)

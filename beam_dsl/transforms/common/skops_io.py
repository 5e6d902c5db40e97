"""``skops.io``, imported without the packages scikit-learn's estimator walk drags in.

On import, skops lists the scikit-learn types it trusts with ``all_estimators``,
which imports every scikit-learn package on its way: the array-API shims for
torch and dask among them (scikit-learn's ``externals``, left out of the list
itself) and pytest, for the helper that silences warnings. scikit-learn takes
each as optional (an ImportError is skipped), so they are hidden while skops
imports: where they are installed, that is 0.35 s less of a `.skops` run's
start-up here, 2.5 s less where torch is installed and the run does not
hide it (:mod:`~beam_dsl.transforms.common.torch_guard`), and the types skops
trusts are the same (tests/test_skops_io.py). Import skops through this module (the
workers' fork server preloads it by name).
"""

import sys

from beam_dsl.transforms.common.torch_guard import Hiding

_WALKED = Hiding("while skops lists the types it trusts", "torch", "dask", "pytest")

sys.meta_path.insert(0, _WALKED)
try:
    import skops.io as io
finally:
    sys.meta_path.remove(_WALKED)

__all__ = ["io"]

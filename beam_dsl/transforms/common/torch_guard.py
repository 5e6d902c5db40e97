"""``import torch`` made to fail in a process that runs a pipeline needing no torch.

Where torch is installed, Beam YAML's ML providers import it (2-3 s of a run's
start-up here) and so would skops, through scikit-learn's array-API shim (1-2 s
and some 250 MB more; beam_dsl imports skops with torch hidden whatever the run:
:mod:`~beam_dsl.transforms.common.skops_io`); both skip it on ImportError.
``beam_dsl run`` puts :class:`NoTorch` first on ``sys.meta_path`` while it
builds and runs such a pipeline (``runner._torch_hidden``), and the worker
processes of that run hide it too (:mod:`~beam_dsl.transforms.common.workers`
has their fork server import :mod:`~beam_dsl.transforms.common.no_torch`
first). A finder, not ``sys.modules["torch"] = None``: scipy takes a None
entry for a loaded module.
"""

import sys


class Hiding:
    """A meta path finder that makes importing the packages it names (and their modules)
    raise ImportError, saying ``why``."""

    def __init__(self, why: str, *packages: str) -> None:
        self.why, self.packages = why, packages

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.packages:
            raise ModuleNotFoundError(f"{name} is not loaded {self.why}")
        return None


NoTorch = Hiding("while Beam YAML builds this pipeline", "torch")


def hidden() -> bool:
    """Whether this process hides torch now."""
    return NoTorch in sys.meta_path

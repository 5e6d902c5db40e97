"""``import torch`` made to fail in a process that runs a pipeline needing no torch.

Where torch is installed, Beam YAML's ML providers import it (2-3 s of a run's
start-up here) and so does skops, through scikit-learn's array-API shim (1-2 s
and some 250 MB more, in TRAIN's first save); both skip it on ImportError.
``beam_dsl run`` puts :class:`NoTorch` first on ``sys.meta_path`` while it
builds and runs such a pipeline (``runner._torch_hidden``), and the worker
processes of that run hide it too (:mod:`~beam_dsl.transforms.common.workers`
has their fork server import :mod:`~beam_dsl.transforms.common.no_torch`
first). A finder, not ``sys.modules["torch"] = None``: scipy takes a None
entry for a loaded module.
"""

import sys


class NoTorch:
    """A meta path finder that makes ``import torch`` raise ImportError."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is not loaded while Beam YAML builds this pipeline")
        return None


def hidden() -> bool:
    """Whether this process hides torch now."""
    return NoTorch in sys.meta_path

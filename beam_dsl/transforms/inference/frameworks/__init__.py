"""MODEL frameworks, as a family (:mod:`beam_dsl.vocabulary`).

One module per framework registers its predictor class (a
:class:`~beam_dsl.transforms.inference.base.SingleModel` built from a
ModelConfig and ``allow_pickle``) with its metadata:

* ``kind``: ``torch`` where the framework (or a user's code it runs) may
  import torch, else ``python`` (``beam_dsl run`` hides torch from pipelines
  with no ``torch`` framework, which starts them seconds faster);
* ``meta["clauses"]``: the framework-specific clauses it takes (``CLASS``,
  ``CALL``, ``TRUST``, ``CLASSES``); lint and ``ModelConfig.validate`` refuse
  them elsewhere;
* ``meta["suffixes"]``: the model file suffixes it reads (empty: any path,
  such as a directory);
* ``meta["one_core"]``: its models predict on one core, so MODEL spreads
  their slices of rows over worker processes (the others use every core in
  their own thread pools: torch, ONNX Runtime).

No module here imports Beam, pandas, scikit-learn, torch, onnxruntime or
transformers at import time: ``lint`` reads this registry. Adding a
framework: a module here, its import below, and its keyword in the grammar's
``FRAMEWORK`` token (beam_dsl/dsl/grammar.lark).
"""

from beam_dsl.vocabulary import Registry

REGISTRY = Registry("frameworks")

# Registration order is the order messages list the frameworks in.
# isort: off
from beam_dsl.transforms.inference.frameworks import sklearn  # noqa: E402, F401
from beam_dsl.transforms.inference.frameworks import pytorch  # noqa: E402, F401
from beam_dsl.transforms.inference.frameworks import huggingface  # noqa: E402, F401
from beam_dsl.transforms.inference.frameworks import onnx  # noqa: E402, F401
from beam_dsl.transforms.inference.frameworks import custom  # noqa: E402, F401

# isort: on

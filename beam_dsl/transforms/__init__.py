"""The Beam PTransforms that compiled Beam YAML names, in one folder per capability.

* ``training``: TRAIN (:class:`~beam_dsl.transforms.training.TrainModels`), fitting,
  metrics, encoders and the model store.
* ``inference``: MODEL (:class:`~beam_dsl.transforms.inference.RunModel`), predictors
  and the model frameworks.
* ``ensemble``: ENSEMBLE (:class:`~beam_dsl.transforms.ensemble.RunEnsemble`) and
  its combiners.
* ``features``: FEATURES (:class:`~beam_dsl.transforms.features.ComputeFeatures`),
  windows, aggregates and stores.
* ``common``: rows and frames, the expression evaluator, and ``runner_compat``, the
  one place where a transform forks by runner.

Compiled YAML names each transform as ``beam_dsl.transforms.<capability>.<Class>``.
Each capability package re-exports its transform lazily (PEP 562), so that the
Beam-free modules beside it (metrics, aggregates, combiners, functions,
frameworks: the vocabulary the front end reads) import without Beam.
"""

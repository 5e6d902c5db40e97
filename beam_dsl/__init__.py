"""beam_dsl: a spec language and compiler for machine learning in Apache Beam pipelines."""

__version__ = "0.1.0"

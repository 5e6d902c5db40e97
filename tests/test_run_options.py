"""A run's pipeline options (runner_compat.RunOptions) make each view once and behave as
Beam's PipelineOptions do."""

import pickle

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    TypeOptions,
)

from beam_dsl.transforms.common.runner_compat import RunOptions, WorkerOptions

FLAGS = ["--runner=FnApiRunner", "--beam_dsl_workers=3", "--no_pipeline_type_check"]


def test_one_view_per_class_with_beams_values():
    options = RunOptions(FLAGS, job_name="j")
    assert options.view_as(TypeOptions) is options.view_as(TypeOptions)
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    assert options.view_as(WorkerOptions).beam_dsl_workers == 3
    assert options.view_as(TypeOptions).pipeline_type_check is False
    assert options.get_all_options() == PipelineOptions(FLAGS, job_name="j").get_all_options()


def test_a_value_set_on_a_view_is_seen_by_every_view():
    options = RunOptions(FLAGS)
    options.view_as(TypeOptions).pipeline_type_check = True
    options.view_as(StandardOptions).streaming = True
    assert options.view_as(TypeOptions).pipeline_type_check is True
    assert options.get_all_options()["streaming"] is True
    assert options.view_as(PipelineOptions).view_as(StandardOptions).streaming is True


def test_pickled_options_leave_their_views_behind():
    options = RunOptions(FLAGS)
    options.view_as(StandardOptions).streaming = True
    state = options.__getstate__()
    assert "_views" not in state
    copy = pickle.loads(pickle.dumps(options))
    assert copy.view_as(StandardOptions).streaming is True
    assert copy.view_as(WorkerOptions).beam_dsl_workers == 3

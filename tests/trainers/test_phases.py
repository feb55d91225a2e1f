"""Tests for inpaint_jax.trainers.phases: which phase each training step belongs to."""

import pytest

from inpaint_jax.trainers import phases


def test_the_phase_names():
    assert (phases.COMPLETION, phases.DISCRIMINATOR, phases.JOINT, phases.TRAIN) == (
        "completion", "discriminator", "joint", "train")


def test_leading_phases_then_the_last_until_total_steps():
    schedule = phases.schedule(500_000, ("completion", 90_000), ("discriminator", 10_000),
                               then="joint")
    assert schedule.lengths == (("completion", 90_000), ("discriminator", 10_000),
                                ("joint", 400_000))
    assert schedule.phases == ("completion", "discriminator", "joint")


@pytest.mark.parametrize("step, phase", [
    (0, "completion"), (89_999, "completion"),
    (90_000, "discriminator"), (99_999, "discriminator"),
    (100_000, "joint"), (499_999, "joint"),
    (500_000, "joint"), (10**9, "joint"),  # past the end: the last phase
])
def test_phase_of_a_step_at_the_boundaries(step, phase):
    schedule = phases.schedule(500_000, ("completion", 90_000), ("discriminator", 10_000),
                               then="joint")
    assert schedule.phase(step) == phase


def test_leading_phases_are_cut_where_total_steps_ends():
    schedule = phases.schedule(95, ("completion", 90), ("discriminator", 10), then="joint")
    assert schedule.lengths == (("completion", 90), ("discriminator", 5), ("joint", 0))
    assert schedule.phases == ("completion", "discriminator")
    assert [schedule.phase(s) for s in (89, 90, 94, 95, 200)] == [
        "completion", "discriminator", "discriminator", "discriminator", "discriminator"]
    short = phases.schedule(3, ("completion", 10), then="joint")
    assert short.lengths == (("completion", 3), ("joint", 0))
    assert short.phases == ("completion",) and short.phase(7) == "completion"


def test_phases_of_length_zero_are_skipped():
    no_warm_up = phases.schedule(300, ("completion", 0), then="joint")
    assert no_warm_up.phases == ("joint",)
    assert no_warm_up.phase(0) == "joint" and no_warm_up.phase(299) == "joint"
    middle = phases.schedule(10, ("completion", 4), ("discriminator", 0), then="joint")
    assert middle.phases == ("completion", "joint")
    assert [middle.phase(s) for s in (3, 4)] == ["completion", "joint"]


def test_a_single_phase_schedule():
    schedule = phases.schedule(7, then=phases.TRAIN)
    assert schedule.lengths == (("train", 7),) and schedule.phases == ("train",)
    assert schedule.phase(0) == schedule.phase(6) == schedule.phase(100) == "train"


def test_a_schedule_can_be_made_from_lengths():
    schedule = phases.Schedule((("a", 2), ("b", 0), ("c", 3)))
    assert schedule.phases == ("a", "c")
    assert [schedule.phase(s) for s in range(6)] == ["a", "a", "c", "c", "c", "c"]


@pytest.mark.parametrize("total_steps, leading, message", [
    (0, (), "total_steps must be >= 1"),
    (-5, (("completion", 1),), "total_steps=-5"),
    (10, (("completion", -1),), "completion=-1"),
    (10, (("completion", 2), ("discriminator", -3)), "discriminator=-3"),
])
def test_impossible_schedules_are_refused(total_steps, leading, message):
    with pytest.raises(ValueError, match=message):
        phases.schedule(total_steps, *leading, then="joint")

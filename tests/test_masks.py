"""Tests for inpaint_jax.masks: shapes, geometry, statistics, seeding, errors."""
import math
import pickle

import numpy as np
import pytest

from inpaint_jax import masks
from inpaint_jax.masks import MaskConfigError, make_mask_fn, mask_rng

SHAPES = [(256, 256), (64, 96), (100, 60)]


def draw_many(mask_fn, height, width, count, seed=0):
    """Draws ``count`` samples with one independent stream per example."""
    return [mask_fn(mask_rng(seed, 0, index), height, width) for index in range(count)]


def holes_of(samples):
    return np.stack([sample.mask[..., 0] for sample in samples]).astype(bool)


def bounding_box(hole):
    rows = np.flatnonzero(hole.any(axis=1))
    cols = np.flatnonzero(hole.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def count_corners(hole):
    """Number of 2x2 windows with exactly one or three hole pixels (corners, jagged edges)."""
    hole = hole.astype(int)
    window = hole[:-1, :-1] + hole[1:, :-1] + hole[:-1, 1:] + hole[1:, 1:]
    return int(np.count_nonzero((window == 1) | (window == 3)))


def assert_window_covers_or_centres(start, side, begin, end, extent):
    assert 0 <= start and start + side <= extent
    if end - begin <= side:
        assert start <= begin and end <= start + side
    else:
        assert abs((start + side / 2) - (begin + end) / 2) <= 1


@pytest.mark.parametrize("kind", masks.MASK_KINDS)
@pytest.mark.parametrize("height,width", SHAPES)
def test_samples_are_binary_nontrivial_and_boxed(kind, height, width):
    for sample in draw_many(make_mask_fn(kind), height, width, 40):
        assert sample.mask.dtype == np.float32 and sample.mask.shape == (height, width, 1)
        assert set(np.unique(sample.mask)) <= {0.0, 1.0}
        assert 0 < sample.mask.sum() < height * width
        box = sample.local_box
        assert box.dtype == np.int32 and box.shape == (4,)
        top, left, box_height, box_width = box
        assert box_height == box_width == min(height, width) // 2
        hole = sample.mask[..., 0] > 0
        row_begin, row_end, col_begin, col_end = bounding_box(hole)
        assert_window_covers_or_centres(top, box_height, row_begin, row_end, height)
        assert_window_covers_or_centres(left, box_width, col_begin, col_end, width)


@pytest.mark.parametrize("kind", masks.MASK_KINDS)
def test_explicit_local_size_is_used_and_centred_on_oversized_holes(kind):
    for sample in draw_many(make_mask_fn(kind, local_size=20), 64, 96, 20):
        top, left, box_height, box_width = sample.local_box
        assert box_height == box_width == 20
        row_begin, row_end, col_begin, col_end = bounding_box(sample.mask[..., 0] > 0)
        assert_window_covers_or_centres(top, 20, row_begin, row_end, 64)
        assert_window_covers_or_centres(left, 20, col_begin, col_end, 96)


def test_local_window_is_placed_randomly_around_the_hole():
    tops = {int(sample.local_box[0]) for sample in draw_many(make_mask_fn("center", local_size=100), 128, 128, 30)}
    assert len(tops) > 5


@pytest.mark.parametrize(
    "height,width,low,high",
    [(256, 256, 96, 128), (128, 128, 48, 64), (64, 64, 24, 32), (192, 320, 72, 96), (320, 192, 72, 96)],
)
def test_glcic_hole_is_one_rectangle_with_sides_in_scaled_bounds(height, width, low, high):
    sides = []
    for sample in draw_many(make_mask_fn("glcic"), height, width, 300):
        hole = sample.mask[..., 0] > 0
        row_begin, row_end, col_begin, col_end = bounding_box(hole)
        assert hole.sum() == (row_end - row_begin) * (col_end - col_begin)
        sides += [row_end - row_begin, col_end - col_begin]
        assert sample.local_box[2] == min(height, width) // 2
    assert min(sides) == low and max(sides) == high


def test_glcic_custom_fractions_apply_to_shorter_side():
    hole_fn = make_mask_fn("glcic", hole_min=0.25, hole_max=0.25)
    hole = hole_fn(mask_rng(3), 80, 200).mask[..., 0] > 0
    row_begin, row_end, col_begin, col_end = bounding_box(hole)
    assert (row_end - row_begin, col_end - col_begin) == (20, 20)


def test_glcic_mean_area_matches_analytic_expectation_and_placement_is_uniform():
    count, side = 200, 256
    samples = draw_many(make_mask_fn("glcic"), side, side, count)
    coverage = holes_of(samples).mean(axis=(1, 2))
    lengths = np.arange(96, 129)
    mean_area = lengths.mean() ** 2
    area_std = math.sqrt(np.mean(lengths**2) ** 2 - mean_area**2)
    tolerance = 4 * area_std / math.sqrt(count) / side**2
    assert abs(coverage.mean() - mean_area / side**2) < tolerance
    boxes = np.array([bounding_box(hole) for hole in holes_of(samples)])
    centres = np.stack([boxes[:, 0] + boxes[:, 1], boxes[:, 2] + boxes[:, 3]], axis=1) / 2
    assert np.all(np.abs(centres.mean(axis=0) - side / 2) < 0.05 * side)


def test_center_hole_is_the_context_encoder_square():
    sample = make_mask_fn("center")(mask_rng(0), 128, 128)
    expected = np.zeros((128, 128), np.float32)
    expected[32:96, 32:96] = 1
    np.testing.assert_array_equal(sample.mask[..., 0], expected)
    np.testing.assert_array_equal(sample.local_box, [32, 32, 64, 64])


def test_center_hole_size_is_a_fraction_of_the_shorter_side():
    hole = make_mask_fn("center", hole_size=0.25)(mask_rng(0), 80, 120).mask[..., 0]
    expected = np.zeros((80, 120), np.float32)
    expected[30:50, 50:70] = 1
    np.testing.assert_array_equal(hole, expected)


def test_ce_random_coverage_stays_in_configured_range():
    for low, high in [(0.2, 0.3), (0.05, 0.1)]:
        mask_fn = make_mask_fn("ce_random", min_coverage=low, max_coverage=high)
        coverage = holes_of(draw_many(mask_fn, 96, 128, 60)).mean(axis=(1, 2))
        pixel = 1 / (96 * 128)
        assert np.all(coverage >= low - pixel) and np.all(coverage <= high + pixel)
        assert low < coverage.mean() < high
        assert coverage.std() > 0


def test_ce_random_holes_are_smooth_blobs_sized_by_blob_size():
    def interior_fraction(blob_size):
        holes = holes_of(draw_many(make_mask_fn("ce_random", blob_size=blob_size), 128, 128, 20))
        inner = holes[:, 1:-1, 1:-1]
        surrounded = inner & holes[:, :-2, 1:-1] & holes[:, 2:, 1:-1] & holes[:, 1:-1, :-2] & holes[:, 1:-1, 2:]
        return surrounded.sum() / inner.sum()

    default = interior_fraction(1 / 7.68)
    assert default > 0.7  # independent pixels at 25 % coverage would give about 0.004
    assert interior_fraction(0.05) < default < interior_fraction(0.4)


def test_free_form_coverage_is_capped_and_scales_with_image_size():
    coverage = {}
    for side in (128, 256):
        coverage[side] = holes_of(draw_many(make_mask_fn("free_form"), side, side, 150)).mean(axis=(1, 2))
        assert np.all(coverage[side] <= 0.5)
    assert 0.02 < coverage[256].mean() < 0.3
    assert abs(coverage[128].mean() - coverage[256].mean()) < 0.03
    capped = holes_of(draw_many(make_mask_fn("free_form", max_coverage=0.05), 128, 128, 40)).mean(axis=(1, 2))
    assert np.all(capped <= 0.05)


def test_free_form_strokes_are_not_rectangles():
    corners = [count_corners(hole) for hole in holes_of(draw_many(make_mask_fn("free_form"), 128, 128, 20))]
    assert np.median(corners) > 40


def test_unreachable_coverage_cap_is_a_clear_error():
    mask_fn = make_mask_fn("free_form", max_coverage=1e-4)
    with pytest.raises(MaskConfigError, match="raise max_coverage"):
        mask_fn(mask_rng(0), 256, 256)


def test_mixed_families_follow_the_weights():
    def draw(**weights):
        zeros = dict(thick_weight=0, medium_weight=0, box_weight=0, combined_weight=0)
        return holes_of(draw_many(make_mask_fn("mixed", **{**zeros, **weights}), 128, 128, 60))

    boxes = draw(box_weight=1)
    # The union of at most three rectangles has at most 3 * 4 corners plus 8 per crossing pair.
    assert max(count_corners(hole) for hole in boxes) <= 12 + 3 * 8
    thick, medium = draw(thick_weight=1), draw(medium_weight=1)
    assert np.median([count_corners(hole) for hole in thick]) > 36
    assert thick.mean() > medium.mean()
    combined = draw(combined_weight=1)
    assert np.median([count_corners(hole) for hole in combined]) > 36
    assert combined.mean() > medium.mean()


def test_mixed_coverage_is_capped():
    for max_coverage in (0.7, 0.2):
        coverage = holes_of(draw_many(make_mask_fn("mixed", max_coverage=max_coverage), 96, 96, 80)).mean(axis=(1, 2))
        assert np.all(coverage <= max_coverage)


@pytest.mark.parametrize("kind", masks.MASK_KINDS)
def test_same_seed_gives_same_masks_and_survives_pickling(kind):
    mask_fn = make_mask_fn(kind)
    restored = pickle.loads(pickle.dumps(mask_fn))
    for index in range(5):
        first = mask_fn(mask_rng(7, 2, index), 96, 128)
        for second in (make_mask_fn(kind)(mask_rng(7, 2, index), 96, 128), restored(mask_rng(7, 2, index), 96, 128)):
            np.testing.assert_array_equal(first.mask, second.mask)
            np.testing.assert_array_equal(first.local_box, second.local_box)


@pytest.mark.parametrize("kind", [kind for kind in masks.MASK_KINDS if kind != "center"])
def test_process_keys_give_different_masks(kind):
    mask_fn = make_mask_fn(kind)
    for index in range(5):
        process_0 = mask_fn(mask_rng(7, 0, index), 96, 128).mask
        process_1 = mask_fn(mask_rng(7, 1, index), 96, 128).mask
        assert not np.array_equal(process_0, process_1)


def test_mask_rng_streams_depend_on_seed_and_every_key():
    draws = {(seed, *keys): mask_rng(seed, *keys).random() for seed in (0, 1) for keys in [(0, 0), (0, 1), (1, 0)]}
    assert len(set(draws.values())) == len(draws)
    assert mask_rng(3, 4, 5).random() == mask_rng(3, 4, 5).random()


@pytest.mark.parametrize("seed,keys", [(-1, ()), (1.5, ()), (0, (-2,)), (0, (1, "a"))])
def test_mask_rng_rejects_bad_seeds(seed, keys):
    with pytest.raises(MaskConfigError, match="non-negative integer"):
        mask_rng(seed, *keys)


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(MaskConfigError) as error:
        make_mask_fn("square")
    for kind in masks.MASK_KINDS:
        assert kind in str(error.value)


def test_unknown_parameter_names_it_and_the_accepted_ones():
    with pytest.raises(MaskConfigError, match="hole_size.*accepts local_size, hole_min, hole_max"):
        make_mask_fn("glcic", hole_size=0.5)


@pytest.mark.parametrize(
    "kind,params,message",
    [
        ("glcic", dict(hole_min=0.6, hole_max=0.5), "hole_min=0.6 is larger than hole_max=0.5"),
        ("glcic", dict(hole_max=1.5), "hole_max=1.5 must be a number strictly between 0 and 1"),
        ("glcic", dict(hole_min=0), "hole_min=0 must be"),
        ("center", dict(hole_size=1.0), "hole_size=1.0 must be"),
        ("center", dict(hole_size="half"), "hole_size='half' must be"),
        ("ce_random", dict(min_coverage=0.4, max_coverage=0.3), "min_coverage=0.4 is larger than max_coverage=0.3"),
        ("ce_random", dict(blob_size=-0.1), "blob_size=-0.1 must be"),
        ("free_form", dict(max_coverage=True), "max_coverage=True must be"),
        ("mixed", dict(box_weight=-1), "box_weight=-1 must be a finite number >= 0"),
        ("mixed", dict(thick_weight=math.inf), "thick_weight=inf must be"),
        ("mixed", dict(thick_weight=0, medium_weight=0, box_weight=0, combined_weight=0), "all family weights are 0"),
        ("glcic", dict(local_size=0), "local_size=0 must be a positive whole number"),
        ("glcic", dict(local_size=12.5), "local_size=12.5 must be a positive whole number"),
    ],
)
def test_impossible_parameters_are_rejected_with_the_parameter_named(kind, params, message):
    with pytest.raises(MaskConfigError, match=message):
        make_mask_fn(kind, **params)


def test_local_window_larger_than_image_is_rejected_at_call_time():
    mask_fn = make_mask_fn("glcic", local_size=100)
    assert mask_fn(mask_rng(0), 100, 120).local_box[2] == 100
    with pytest.raises(MaskConfigError, match="local_size=100 does not fit in a 64x128 image; pass local_size <= 64"):
        mask_fn(mask_rng(0), 64, 128)


@pytest.mark.parametrize(
    "height,width,message", [(4, 64, "image height=4 is too small"), (64, 32.0, "image width=32.0 must be")]
)
def test_bad_image_sizes_are_rejected(height, width, message):
    with pytest.raises(MaskConfigError, match=message):
        make_mask_fn("center")(mask_rng(0), height, width)


def test_errors_are_value_errors():
    assert issubclass(MaskConfigError, ValueError)

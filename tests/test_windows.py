"""Tests for inpaint_jax.windows: the working window around holes, crop, paste, resizing."""

import cv2
import numpy as np
import pytest

from inpaint_jax import windows


def box_hole(height, width, top, left, bottom, right):
    hole = np.zeros((height, width), bool)
    hole[top:bottom, left:right] = True
    return hole


def test_window_centres_the_holes_bounding_box_at_twice_its_side():
    hole = box_hole(20, 30, 2, 10, 6, 18)  # 4 x 8
    hole[4, 12] = False
    window = windows.hole_window(hole, min_size=4)
    assert window == windows.Window(top=-4, left=6, side=16)
    rows, columns = np.nonzero(windows.crop(hole, window))
    # The real hole lies in the central half; the rows above the image mirror it.
    inside = rows >= 4
    assert (rows[inside].min(), rows[inside].max()) == (6, 9)
    assert (columns.min(), columns.max()) == (4, 11)


def test_window_is_at_least_min_size_and_a_multiple_of_four():
    tiny = box_hole(20, 30, 7, 3, 8, 4)
    assert windows.hole_window(tiny, min_size=64) == windows.Window(top=-24, left=-28, side=64)
    assert windows.hole_window(tiny, min_size=61).side == 64
    odd = box_hole(40, 40, 10, 10, 15, 13)  # 5 x 3: twice 5 is 10, rounded up to 12
    assert windows.hole_window(odd, min_size=1) == windows.Window(top=7, left=6, side=12)


@pytest.mark.parametrize("seed", range(6))
def test_holes_stay_in_the_central_half_after_scaling(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(40, 400, size=2)
    hole = np.zeros((height, width), bool)
    for _ in range(rng.integers(1, 4)):  # one to three boxes, anywhere, borders included
        top, left = rng.integers(0, height), rng.integers(0, width)
        hole[top:top + rng.integers(1, 90), left:left + rng.integers(1, 90)] = True
    window = windows.hole_window(hole, min_size=int(rng.integers(8, 160)))
    rows, columns = np.nonzero(hole)
    quarter = window.side // 4
    assert window.side % 4 == 0
    assert rows.min() - window.top >= quarter and rows.max() - window.top < 3 * quarter
    assert columns.min() - window.left >= quarter and columns.max() - window.left < 3 * quarter
    real = np.zeros((window.side, window.side), bool)  # the hole without mirrored copies
    real[rows - window.top, columns - window.left] = True
    for size in (128, 100, 30):
        scaled_rows, scaled_columns = np.nonzero(windows.resize_hole(real, (size, size)))
        low, high = size // 4, -(-3 * size // 4)  # the central half, rounded outwards
        assert scaled_rows.min() >= low and scaled_rows.max() < high
        assert scaled_columns.min() >= low and scaled_columns.max() < high


def test_an_empty_hole_map_is_refused():
    with pytest.raises(ValueError, match="at least one hole pixel"):
        windows.hole_window(np.zeros((8, 8), bool), min_size=4)


def test_crop_mirrors_outside_the_image_and_paste_puts_it_back():
    image = np.random.default_rng(0).uniform(size=(9, 7, 3)).astype(np.float32)
    window = windows.Window(top=-3, left=2, side=12)
    cropped = windows.crop(image, window)
    assert cropped.shape == (12, 12, 3)
    np.testing.assert_array_equal(cropped[3:12, 0:5], image[0:9, 2:7])
    np.testing.assert_array_equal(cropped[0:3, 0:5], image[2::-1, 2:7])  # mirrored rows
    np.testing.assert_array_equal(windows.paste(image, window, cropped), image)
    pasted = windows.paste(np.zeros_like(image), window, np.ones((12, 12, 3), np.float32))
    assert pasted[:, 2:].all() and not pasted[:, :2].any()


def test_a_window_larger_than_the_image_is_mirrored_on_every_side():
    image = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    cropped = windows.crop(image, windows.Window(top=-3, left=-3, side=8))
    assert cropped.shape == (8, 8, 1)
    np.testing.assert_array_equal(cropped[3:5, 3:6], image)
    assert set(np.unique(cropped)) == set(range(6))


def test_resize_image_averages_areas_down_and_clips_bicubic_up():
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(12, 18, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        windows.resize_image(image, (4, 6)),
        cv2.resize(image, (6, 4), interpolation=cv2.INTER_AREA))
    assert windows.resize_image(image, (12, 18)) is image
    sharp = np.zeros((8, 8, 3), np.float32)
    sharp[:, 4:] = 1
    cubic = cv2.resize(sharp, (32, 32), interpolation=cv2.INTER_CUBIC)
    assert cubic.min() < 0 and cubic.max() > 1  # bicubic overshoots at the edge...
    enlarged = windows.resize_image(sharp, (32, 32), upsample=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(enlarged, np.clip(cubic, 0, 1))  # ...and is clipped
    np.testing.assert_array_equal(
        windows.resize_image(sharp, (32, 32)),
        cv2.resize(sharp, (32, 32), interpolation=cv2.INTER_LINEAR))


def test_resize_hole_marks_every_pixel_that_overlaps_a_hole():
    # 10 px -> 3 px: output pixel i covers input [10 i / 3, 10 (i + 1) / 3).
    hole = np.zeros((10, 10), bool)
    hole[4, 4] = True  # inside output pixel 1 only
    np.testing.assert_array_equal(np.argwhere(windows.resize_hole(hole, (3, 3))), [[1, 1]])
    hole = np.zeros((10, 10), bool)
    hole[3, 3] = True  # [3, 4) overlaps output pixels 0 and 1
    assert np.array_equal(np.argwhere(windows.resize_hole(hole, (3, 3))),
                          [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert windows.resize_hole(hole, (10, 10)) is hole


@pytest.mark.parametrize("source, target", [((23, 17), (7, 5)), ((9, 12), (28, 30)),
                                            ((10, 10), (4, 25))])
def test_resize_hole_agrees_with_loops_shrinking_and_enlarging(source, target):
    hole = np.random.default_rng(2).uniform(size=source) < 0.08
    (height, width), (new_height, new_width) = source, target

    def covered(i, size, new_size):  # input pixels that output pixel i overlaps
        return slice(i * size // new_size, -(-(i + 1) * size // new_size))

    expected = [[hole[covered(i, height, new_height), covered(j, width, new_width)].any()
                 for j in range(new_width)] for i in range(new_height)]
    np.testing.assert_array_equal(windows.resize_hole(hole, target), expected)

"""Tests for inpaint_jax.postprocess: GLCIC's fast-marching + Poisson blending per hole."""

import cv2
import numpy as np
import pytest

from inpaint_jax import image_io, postprocess

HEIGHT, WIDTH = 72, 96


def smooth_photo() -> np.ndarray:
    """A smooth colour image with fine texture, float32 in [0, 1]."""
    y, x = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
    base = np.stack([0.45 + 0.2 * np.sin(x / 9), 0.5 + 0.15 * np.cos(y / 7),
                     0.4 + 0.1 * np.sin((x + y) / 11)], axis=-1)
    texture = 0.03 * (np.sin(1.3 * x) * np.cos(1.1 * y))[..., None]
    return (base + texture).astype(np.float32)


def completion_with_colour_shifts(photo, mask, shifts):
    """The photo with each hole (label order of `cv2.connectedComponents`) shifted in colour."""
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    completed = photo.copy()
    for label, shift in enumerate(shifts, start=1):
        completed[labels == label] += np.float32(shift)
    return np.clip(completed, 0, 1), labels


def hole_errors(result, photo, labels, count):
    """Mean absolute error against the photo in each hole."""
    return [float(np.abs(result - photo)[labels == label].mean()) for label in range(1, count + 1)]


def test_separate_holes_are_each_blended_into_their_surroundings():
    photo = smooth_photo()
    mask = np.zeros((HEIGHT, WIDTH), np.float32)
    mask[10:30, 12:40] = 1
    mask[40:64, 55:85] = 1
    completed, labels = completion_with_colour_shifts(photo, mask, [0.15, -0.15])

    result = postprocess.postprocess(completed, mask)

    before = hole_errors(completed, photo, labels, 2)
    after = hole_errors(result, photo, labels, 2)
    assert all(error > 0.14 for error in before)
    # Each hole's colour is pulled to its own surroundings, texture kept in place.
    assert all(error < 0.05 for error in after), after


def test_known_pixels_are_returned_bit_exact():
    photo = smooth_photo()
    mask = np.zeros((HEIGHT, WIDTH), np.float32)
    cv2.circle(mask, (30, 30), 12, 1, thickness=-1)
    cv2.line(mask, (50, 10), (90, 60), 1, thickness=9)  # irregular: its box holds known pixels
    completed, _ = completion_with_colour_shifts(photo, mask, [0.2, 0.2])

    result = postprocess.postprocess(completed, mask[..., None])

    assert result.dtype == np.float32 and result.shape == completed.shape
    known = mask == 0
    np.testing.assert_array_equal(result[known], completed[known])
    assert np.abs(result[~known] - completed[~known]).mean() > 0.1  # the holes did change


def test_holes_touching_the_border_and_a_corner_are_blended():
    photo = smooth_photo()
    mask = np.zeros((HEIGHT, WIDTH), np.float32)
    mask[:18, 30:60] = 1  # top edge
    mask[50:, 80:] = 1  # bottom-right corner
    completed, labels = completion_with_colour_shifts(photo, mask, [0.15, -0.15])

    result = postprocess.postprocess(completed, mask)

    # No known pixels lie beyond the border, so the fit is looser than inside.
    before = hole_errors(completed, photo, labels, 2)
    after = hole_errors(result, photo, labels, 2)
    assert all(error < 0.5 * previous for error, previous in zip(after, before)), after
    # The edge row itself is blended too.
    assert np.abs(result[0, 30:60] - photo[0, 30:60]).mean() < 0.1
    np.testing.assert_array_equal(result[mask == 0], completed[mask == 0])


def test_holes_too_thin_for_poisson_blending_keep_the_fast_marching_fill():
    photo = smooth_photo()
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[20, 10:50] = 1  # one pixel high
    mask[40:42, 30:31] = 1  # 2x1
    completed, _ = completion_with_colour_shifts(photo, mask, [0.3, 0.3])

    result = postprocess.postprocess(completed, mask.astype(bool))

    pixels = np.round(completed * 255).astype(np.uint8)
    fast_marching = cv2.inpaint(pixels, mask * 255, postprocess.FMM_RADIUS, cv2.INPAINT_TELEA)
    hole = mask.astype(bool)
    np.testing.assert_array_equal(result[hole], fast_marching[hole] / np.float32(255))


def test_without_holes_the_completion_comes_back_unchanged():
    completed = smooth_photo()
    result = postprocess.postprocess(completed, np.zeros((HEIGHT, WIDTH), np.float32))
    np.testing.assert_array_equal(result, completed)
    assert result is not completed


def test_bad_inputs_are_explained():
    with pytest.raises(image_io.MaskError, match=f"{HEIGHT}x{WIDTH}"):
        postprocess.postprocess(smooth_photo(), np.zeros((HEIGHT + 1, WIDTH), np.float32))
    with pytest.raises(ValueError, match="float RGB image"):
        postprocess.postprocess(np.zeros((HEIGHT, WIDTH, 3), np.uint8),
                                np.zeros((HEIGHT, WIDTH), np.float32))

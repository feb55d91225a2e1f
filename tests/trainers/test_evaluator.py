"""Tests for inpaint_jax.trainers.evaluator: periodic evaluation during training."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax import metrics, parallel
from inpaint_jax.trainers import evaluator

pytestmark = pytest.mark.fast_compile  # small programs: compiling dominates


def predict(state, batch):
    """A 'network' that paints every pixel with the state's colour."""
    return jnp.broadcast_to(state["colour"], batch["image"].shape)


def make_batches(count=2, size=16, seed=0):
    """`count` eval batches of 8 random images with a square hole; the last batch half padding."""
    rng = np.random.default_rng(seed)
    batches = []
    for index in range(count):
        image = rng.uniform(size=(8, size, size, 3)).astype(np.float32)
        mask = np.zeros((8, size, size, 1), np.float32)
        mask[:, 4:12, 2:10] = 1.0
        valid = np.ones(8, bool)
        if index == count - 1:
            valid[4:] = False
        batches.append({"image": image, "mask": mask, "valid": valid,
                        "local_box": np.zeros((8, 4), np.int32)})
    return batches


@pytest.fixture(scope="module")
def evaluate():
    return evaluator.Evaluator(predict, parallel.create_mesh(), num_samples=3)


STATE = {"colour": jnp.array([0.2, 0.5, 0.9])}


def test_the_results_are_the_mean_image_metrics_of_the_valid_completions(evaluate):
    batches = make_batches()
    results, _ = evaluate(STATE, iter(batches))
    expected, count = {}, 0
    for batch in batches:
        completion = batch["image"] * (1 - batch["mask"]) + np.asarray(
            predict(STATE, batch)) * batch["mask"]
        per_example = jax.device_get(metrics.image_metrics(completion, batch["image"],
                                                           batch["mask"]))
        for name, values in per_example.items():
            expected[name] = expected.get(name, 0.0) + float(values[batch["valid"]].sum())
        count += int(batch["valid"].sum())
    assert count == 12
    assert set(results) == set(expected)
    for name, total in expected.items():
        np.testing.assert_allclose(results[name], total / count, rtol=1e-5, err_msg=name)
    assert {"psnr", "ssim", "l1", "l2", "hole_psnr", "hole_ssim", "hole_l1", "hole_l2"} <= set(
        results)


def test_padding_examples_do_not_count(evaluate):
    batches = make_batches(count=1)
    results, _ = evaluate(STATE, iter(batches))
    noisy = [dict(batch) for batch in batches]
    noisy[0]["image"] = noisy[0]["image"].copy()
    noisy[0]["image"][4:] = 0.0  # only padding changes
    again, _ = evaluate(STATE, iter(noisy))
    for name in results:
        np.testing.assert_allclose(again[name], results[name], rtol=1e-6, err_msg=name)


def test_a_better_prediction_scores_better(evaluate):
    batches = make_batches()
    grey, _ = evaluate({"colour": jnp.full(3, 0.5)}, iter(batches))
    black, _ = evaluate({"colour": jnp.zeros(3)}, iter(batches))
    assert grey["hole_l1"] < black["hole_l1"] and grey["psnr"] > black["psnr"]


def test_the_sample_grid_shows_the_first_examples_of_the_first_batch(evaluate):
    batches = make_batches()
    _, grid = evaluate(STATE, iter(batches))
    assert grid.shape == (3 * 16, 3 * 16, 3) and grid.dtype == np.float32
    first = batches[0]
    completion = first["image"] * (1 - first["mask"]) + np.asarray(STATE["colour"]) * first["mask"]
    expected = evaluator.sample_grid(first["image"][:3], first["mask"][:3], completion[:3])
    np.testing.assert_allclose(grid, expected, atol=1e-6)


def test_an_empty_evaluation_split_is_an_error(evaluate):
    with pytest.raises(ValueError, match="yielded no examples.*eval_split"):
        evaluate(STATE, iter([]))
    padding_only = make_batches(count=1)
    padding_only[0]["valid"][:] = False
    with pytest.raises(ValueError, match="yielded no examples"):
        evaluate(STATE, iter(padding_only))


def test_sample_grid_rows_are_masked_input_completion_and_truth():
    image = np.full((2, 4, 4, 3), 0.25, np.float32)
    mask = np.zeros((2, 4, 4, 1), np.float32)
    mask[:, 1:3, 1:3] = 1.0
    completion = np.full((2, 4, 4, 3), 0.75, np.float32)
    grid = evaluator.sample_grid(image, mask, completion)
    assert grid.shape == (8, 12, 3)
    masked = grid[:4, :4]
    assert (masked[1:3, 1:3] == 1.0).all() and masked[0, 0, 0] == 0.25  # holes shown white
    assert (grid[:4, 4:8] == 0.75).all() and (grid[:4, 8:] == 0.25).all()
    assert (evaluator.sample_grid(image * 3, mask, completion - 2) <= 1).all()  # clipped
    assert (evaluator.sample_grid(image * 3, mask, completion - 2) >= 0).all()


def test_write_eval_results_appends_and_replaces_a_step(tmp_path):
    evaluator.write_eval_results(str(tmp_path), 3, {"psnr": np.float32(20.5)})
    evaluator.write_eval_results(str(tmp_path), 6, {"psnr": 21.0, "ssim": 0.5})
    assert json.loads((tmp_path / "eval_metrics.json").read_text()) == [
        {"step": 3, "psnr": 20.5}, {"step": 6, "psnr": 21.0, "ssim": 0.5}]
    evaluator.write_eval_results(str(tmp_path), 3, {"psnr": 19.0})  # a resumed run evaluates again
    assert json.loads((tmp_path / "eval_metrics.json").read_text()) == [
        {"step": 6, "psnr": 21.0, "ssim": 0.5}, {"step": 3, "psnr": 19.0}]
    assert [p.name for p in tmp_path.iterdir()] == ["eval_metrics.json"]  # no temporary files

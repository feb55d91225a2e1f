"""Tests for inpaint_jax.data.datasets: a run's train iterator and eval batches from its config."""

import itertools

import jax
import numpy as np
import pytest
from tests.helpers import tiny_config, tiny_dfnet_config

from inpaint_jax import masks, parallel
from inpaint_jax.data import datasets


@pytest.fixture(scope="module")
def config(photo_dir, tmp_path_factory):
    """The tiny GLCIC config (16 px crops, local window 8) on the generated photos, eval batch 16."""
    return tiny_config(photo_dir, str(tmp_path_factory.mktemp("tfds")),
                       **{"eval.global_batch_size": 16})


@pytest.fixture(scope="module")
def data(config):
    return datasets.create(config, parallel.create_mesh())


def test_train_batches_are_this_process_share_of_the_global_batch(config, data):
    mesh = parallel.create_mesh()
    per_process = parallel.per_process_batch_size(config.global_batch_size, mesh)
    assert per_process == config.global_batch_size // jax.process_count()
    for batch in itertools.islice(data.train, 2):
        assert set(batch) == {"image", "mask", "local_box"}
        assert batch["image"].shape == (per_process, 16, 16, 3)
        assert batch["mask"].shape == (per_process, 16, 16, 1)
        assert batch["local_box"].shape == (per_process, 4)
        assert (batch["local_box"][:, 2:] == config.mask.local_size).all()
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        assert (batch["mask"].reshape(per_process, -1).max(axis=1) == 1.0).all()  # a hole each


def test_the_train_iterator_is_checkpointable(config, data):
    state = data.train.get_state()
    expected = next(data.train)
    again = datasets.create(config, parallel.create_mesh())
    again.train.set_state(state)
    got = next(again.train)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_eval_batches_are_finite_and_the_same_on_every_pass(config, data):
    first, second = list(data.eval_batches()), list(data.eval_batches())
    assert first and len(first) == len(second)
    per_process = parallel.per_process_batch_size(config.eval.global_batch_size,
                                                  parallel.create_mesh())
    for a, b in zip(first, second):
        assert set(a) == {"image", "mask", "local_box", "valid"}
        assert a["image"].shape == (per_process, 16, 16, 3) and a["valid"].dtype == np.bool_
        for key in a:  # the same images and the same fixed masks every time
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert sum(int(batch["valid"].sum()) for batch in first) >= 1


def test_first_batches_takes_at_most_max_batches_and_zero_means_all():
    assert list(datasets.first_batches(iter(range(5)), 2)) == [0, 1]
    assert list(datasets.first_batches(iter(range(5)), 0)) == [0, 1, 2, 3, 4]
    assert list(datasets.first_batches(iter(range(2)), 7)) == [0, 1]
    assert list(datasets.first_batches(iter([]), 3)) == []
    endless = datasets.first_batches(itertools.count(), 3)
    assert list(endless) == [0, 1, 2]


def test_mask_fn_uses_the_configured_local_size_and_half_the_shorter_side_without_one(
    photo_dir, tmp_path
):
    with_local = tiny_config(photo_dir, str(tmp_path), **{"mask.local_size": 20})
    sample = datasets.mask_fn(with_local)(masks.mask_rng(0), 64, 48)
    assert sample.mask.shape == (64, 48, 1)
    assert tuple(sample.local_box[2:]) == (20, 20)

    without = tiny_dfnet_config(photo_dir, str(tmp_path))  # DFNet's config has no local_size
    assert "local_size" not in without.mask
    sample = datasets.mask_fn(without)(masks.mask_rng(0), 64, 48)
    assert tuple(sample.local_box[2:]) == (24, 24)


def test_mask_fn_passes_the_kind_and_its_parameters(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path), **{"mask.kind": "center",
                                                      "mask.params": {"hole_size": 0.5}})
    del config.mask.local_size
    hole = datasets.mask_fn(config)(masks.mask_rng(0), 32, 32).mask[..., 0]
    expected = np.zeros((32, 32), np.float32)
    expected[8:24, 8:24] = 1.0
    np.testing.assert_array_equal(hole, expected)
    config.mask.params = {"hole_sise": 0.5}
    with pytest.raises(masks.MaskConfigError, match="hole_sise"):
        datasets.mask_fn(config)


def test_a_global_batch_that_does_not_divide_over_the_devices_is_refused(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path), global_batch_size=6)
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        datasets.create(config, parallel.create_mesh())

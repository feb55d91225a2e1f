"""Tests for inpaint_jax.data.pipeline on small in-memory sources of generated images."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from inpaint_jax import image_io, masks
from inpaint_jax.data import pipeline

CROP = 32
LOCAL = 16


def _encode(array: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format)
    return buffer.getvalue()


def _record(image_id: str, array: np.ndarray, storage: str) -> dict:
    """A source record holding the image as a uint8 array or as PNG/JPEG bytes."""
    image = array if storage == "array" else _encode(array, storage)
    return {"image": image, "image_id": image_id}


def _noise_source(sizes, storages=("array", "PNG")):
    """Records of distinct random-noise images, cycling through storage formats."""
    rng = np.random.default_rng(1234)
    return [_record(f"noise{i}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                    storages[i % len(storages)]) for i, (h, w) in enumerate(sizes)]


def _ramp_image(height: int, width: int, slope: float) -> np.ndarray:
    """Red grows with the row, green with the column, blue is constant."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows * slope, cols * slope, np.full_like(rows, 100)], -1).round().astype(np.uint8)


def _id_source(num_images: int):
    """PNG records of flat images, at least CROP px, whose red value is 10 * their index."""
    return [_record(f"flat{i}", np.full((CROP + i % 3, CROP + 2 * (i % 2), 3), 10 * i, np.uint8), "PNG")
            for i in range(num_images)]


def _image_ids(batch) -> list[int]:
    """Indices of the flat `_id_source` images in a batch (read at the crop centre)."""
    return [int(round(v * 255 / 10)) for v in batch["image"][:, CROP // 2, CROP // 2, 0]]


def _mask_fn():
    """GLCIC rectangles with sides of 4 to 12 px in a 32 px crop, inside a 16 px local window."""
    return masks.make_mask_fn("glcic", local_size=LOCAL, hole_min=4 / CROP, hole_max=12 / CROP)


def _train(source, **overrides):
    kwargs = dict(batch_size=4, crop_size=CROP, resize_range=(CROP, CROP + 16), mask_fn=_mask_fn(),
                  seed=0, shard_index=0, shard_count=1)
    return pipeline.create_train_iterator(source, **{**kwargs, **overrides})


def _eval(source, **overrides):
    kwargs = dict(batch_size=2, crop_size=CROP, mask_fn=_mask_fn(), seed=0, shard_index=0, shard_count=1)
    return pipeline.create_eval_iterator(source, **{**kwargs, **overrides})


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _assert_valid_examples(batch, batch_size):
    assert batch["image"].shape == (batch_size, CROP, CROP, 3) and batch["image"].dtype == np.float32
    assert batch["mask"].shape == (batch_size, CROP, CROP, 1) and batch["mask"].dtype == np.float32
    assert batch["local_box"].shape == (batch_size, 4) and batch["local_box"].dtype == np.int32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert set(np.unique(batch["mask"])) <= {0.0, 1.0}
    for mask, (top, left, height, width) in zip(batch["mask"][..., 0], batch["local_box"]):
        assert height == width == LOCAL
        assert 0 <= top <= CROP - height and 0 <= left <= CROP - width
        inside = np.zeros_like(mask)
        inside[top:top + height, left:left + width] = 1
        assert mask.sum() > 0 and np.all(mask <= inside), "hole must lie inside its local box"


MIXED_SIZES = [(40, 60), (60, 40), (24, 36), (32, 32), (50, 33), (33, 70)]


def test_train_batches_have_the_agreed_shapes_dtypes_and_ranges():
    source = _noise_source(MIXED_SIZES, storages=("array", "PNG", "JPEG"))
    for batch in _take(_train(source), 4):
        assert set(batch) == {"image", "mask", "local_box"}
        _assert_valid_examples(batch, 4)


def _find_window(crop: np.ndarray, images) -> tuple[int, int, int]:
    """(image index, top, left) of the window of `images` equal to `crop`, else fails."""
    size = crop.shape[0]
    for index, image in enumerate(images):
        for top in range(image.shape[0] - size + 1):
            for left in range(image.shape[1] - size + 1):
                if np.array_equal(image[top:top + size, left:left + size], crop):
                    return index, top, left
    raise AssertionError("crop is not a window of any source image")


def test_without_resize_the_crops_are_random_windows_of_the_original_images():
    source = _noise_source([(CROP + 4, CROP + 9), (CROP + 7, CROP), (CROP, CROP + 5)])
    originals = [record["image"] if isinstance(record["image"], np.ndarray)
                 else np.asarray(Image.open(io.BytesIO(record["image"]))) for record in source]
    found = set()
    for batch in _take(_train(source, batch_size=3, resize_range=None), 4):
        pixels = np.rint(batch["image"] * 255).astype(np.uint8)
        found.update(_find_window(crop, originals) for crop in pixels)
    assert {index for index, _, _ in found} == {0, 1, 2}
    assert len({(top, left) for _, top, left in found}) > 3, "crop positions should vary"


def _estimated_shortest_side(crop: np.ndarray, original_shortest: int, slope: float) -> tuple[float, float]:
    """Shortest side the image was resized to, from the red (rows) and green (columns) gradients."""
    interior = slice(3, crop.shape[0] - 3)
    positions = np.arange(crop.shape[0])[interior]
    row_slope = np.polyfit(positions, crop[interior, :, 0].mean(axis=1), 1)[0]
    col_slope = np.polyfit(positions, crop[:, interior, 1].mean(axis=0), 1)[0]
    return original_shortest * slope / row_slope, original_shortest * slope / col_slope


@pytest.mark.parametrize("height, width", [(40, 64), (72, 48), (24, 30)])
def test_shortest_side_is_resized_to_a_random_size_in_resize_range(height, width):
    slope = 3.0
    source = [_record("ramp", _ramp_image(height, width, slope), "PNG")] * 4
    low, high = CROP + 2, CROP + 14
    sizes = []
    for batch in _take(_train(source, resize_range=(low, high)), 6):
        for crop in batch["image"] * 255:
            from_rows, from_cols = _estimated_shortest_side(crop, min(height, width), slope)
            assert abs(from_rows - from_cols) < 1.0, "aspect ratio must be kept"
            sizes.append(from_rows)
    assert low - 1.0 < min(sizes) and max(sizes) < high + 1.0
    assert max(sizes) - min(sizes) > (high - low) / 2, "sizes should spread over the range"


def test_restored_iterator_continues_with_exactly_the_same_batches():
    source = _noise_source(MIXED_SIZES[:5])
    iterator = _train(source, batch_size=3)
    _take(iterator, 2)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = _take(iterator, 3)  # crosses epoch boundaries (5 examples, 3 per batch)
    restored = _train(source, batch_size=3)
    restored.set_state(state)
    _assert_batches_equal(_take(restored, 3), expected)


def test_processes_read_disjoint_shards_that_cover_every_epoch_in_a_new_order():
    source = _id_source(8)
    shards = [_train(source, batch_size=2, resize_range=None, shard_index=i, shard_count=2) for i in range(2)]
    epochs = [[], []]
    first_masks = []
    for shard in shards:
        batches = _take(shard, 4)
        first_masks.append(batches[0]["mask"])
        epochs[0].append(_image_ids(batches[0]) + _image_ids(batches[1]))
        epochs[1].append(_image_ids(batches[2]) + _image_ids(batches[3]))
    for shard_ids in epochs:
        assert not set(shard_ids[0]) & set(shard_ids[1])
        assert sorted(shard_ids[0] + shard_ids[1]) == list(range(8))
    assert epochs[0] != epochs[1], "each epoch should be shuffled differently"
    assert not np.array_equal(first_masks[0], first_masks[1]), "processes should draw different masks"


def test_different_seeds_give_different_orders_and_the_same_seed_the_same_order():
    source = _id_source(8)
    orders = {seed: _image_ids(next(_train(source, batch_size=8, resize_range=None, seed=seed)))
              for seed in (0, 1)}
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(8))
    assert orders[0] != orders[1]
    assert _image_ids(next(_train(source, batch_size=8, resize_range=None, seed=0))) == orders[0]


def test_shard_defaults_to_the_jax_process():
    source = _id_source(4)
    _assert_batches_equal([next(pipeline.create_train_iterator(
        source, batch_size=4, crop_size=CROP, resize_range=None, mask_fn=_mask_fn(), seed=3))],
        [next(_train(source, resize_range=None, seed=3, shard_index=0, shard_count=1))])


def test_worker_processes_give_the_same_batches_and_a_restorable_json_state():
    source = _noise_source(MIXED_SIZES[:4])
    iterator = _train(source, batch_size=2, worker_count=1)
    restored = _train(source, batch_size=2, worker_count=1)
    try:
        batches = _take(iterator, 2)
        state = json.loads(json.dumps(iterator.get_state()))
        expected = _take(iterator, 2)
        restored.set_state(state)
        _assert_batches_equal(_take(restored, 2), expected)
    finally:
        iterator.close()
        restored.close()
    _assert_batches_equal(batches + expected, _take(_train(source, batch_size=2), 4))


def test_eval_batches_are_centre_crops_and_the_same_on_every_call():
    source = [_record(f"ramp{i}", _ramp_image(h, w, 3.0), "PNG") for i, (h, w) in enumerate([(48, 80), (90, 40)])]
    first = list(_eval(source))
    _assert_batches_equal(first, list(_eval(source)))
    assert len(first) == 1 and set(first[0]) == {"image", "mask", "local_box", "valid"}
    _assert_valid_examples(first[0], 2)
    for crop, (height, width) in zip(first[0]["image"] * 255, [(48, 80), (90, 40)]):
        from_rows, from_cols = _estimated_shortest_side(crop, min(height, width), 3.0)
        assert abs(from_rows - CROP) < 1.0 and abs(from_cols - CROP) < 1.0
        centre = np.array([(height - 1) / 2, (width - 1) / 2]) * 3.0
        np.testing.assert_allclose(crop[..., :2].mean(axis=(0, 1)), centre, atol=3.0)


def test_eval_pads_every_shard_to_the_same_number_of_full_batches():
    source = _id_source(5)
    shards = [list(_eval(source, batch_size=2, shard_index=i, shard_count=2)) for i in range(2)]
    assert [len(batches) for batches in shards] == [2, 2]
    valid_ids = []
    for batches in shards:
        for batch in batches:
            _assert_valid_examples(batch, 2)
            assert batch["valid"].dtype == np.bool_
            valid_ids += [i for i, v in zip(_image_ids(batch), batch["valid"]) if v]
    assert sorted(valid_ids) == list(range(5))
    assert [b["valid"].tolist() for b in shards[1]] == [[True, True], [False, False]]


def _masks_by_image(batches) -> dict[int, np.ndarray]:
    return {i: mask for batch in batches
            for i, mask, valid in zip(_image_ids(batch), batch["mask"], batch["valid"]) if valid}


def test_eval_masks_depend_only_on_seed_and_image():
    source = _id_source(5)
    reference = _masks_by_image(_eval(source, batch_size=1))
    assert len(reference) == 5
    assert len({mask.tobytes() for mask in reference.values()}) == 5
    for kwargs in (dict(batch_size=4), dict(batch_size=2, shard_index=1, shard_count=3)):
        for image_id, mask in _masks_by_image(_eval(source, **kwargs)).items():
            np.testing.assert_array_equal(mask, reference[image_id])
    other_seed = _masks_by_image(_eval(source, batch_size=1, seed=1))
    assert any(not np.array_equal(other_seed[i], reference[i]) for i in reference)


@pytest.mark.parametrize("overrides, message", [
    (dict(resize_range=(48,)), r"resize_range must be \(lo, hi\) or None"),
    (dict(resize_range=(48, 40)), "lo > hi"),
    (dict(resize_range=(CROP - 1, 48)), "smaller than crop_size"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(crop_size=0), "crop_size must be an integer >= 1"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(shard_index=2, shard_count=2), "shard_index < shard_count"),
    (dict(worker_count=-1), "worker_count"),
    (dict(shard_index=1, shard_count=5), "fewer than the 5 processes"),
])
def test_train_iterator_rejects_bad_arguments(overrides, message):
    with pytest.raises(pipeline.PipelineError, match=message):
        _train(_id_source(4), **overrides)


def test_batches_larger_than_the_dataset_span_epochs():
    batches = _take(_train(_id_source(3), batch_size=5), 3)
    ids = [image_id for batch in batches for image_id in _image_ids(batch)]
    assert len(ids) == 15
    for epoch in range(5):  # every consecutive run of 3 examples is one shuffled epoch.
        assert sorted(ids[3 * epoch:3 * epoch + 3]) == sorted(set(ids))


def test_empty_or_sequential_sources_are_rejected():
    for create in (_train, _eval):
        with pytest.raises(pipeline.PipelineError, match="empty"):
            create([])
        with pytest.raises(pipeline.PipelineError, match="random-access data source"):
            create(iter(_id_source(4)))


def test_eval_iterator_rejects_bad_arguments():
    with pytest.raises(pipeline.PipelineError, match="batch_size"):
        _eval(_id_source(3), batch_size=0)
    with pytest.raises(pipeline.PipelineError, match="shard_index"):
        _eval(_id_source(3), shard_index=-1, shard_count=2)


def test_image_smaller_than_the_crop_without_resize_names_the_image():
    source = _noise_source([(CROP, CROP + 3), (CROP - 2, CROP + 10)]) * 2
    with pytest.raises(pipeline.PipelineError, match=rf"'noise1' is {CROP - 2}x{CROP + 10}.*{CROP}x{CROP} crop"):
        _take(_train(source, batch_size=2, resize_range=None), 2)


def test_record_with_an_unusable_image_array_is_rejected():
    source = [{"image": np.zeros((CROP, CROP), np.float32), "image_id": "gray"}] * 2
    with pytest.raises(pipeline.PipelineError, match="'gray'.*uint8 \\(H, W, 3\\)"):
        next(_train(source, batch_size=2))


def test_corrupt_image_bytes_raise_an_error_naming_the_image():
    source = [_record(f"ok{i}", np.zeros((CROP, CROP, 3), np.uint8), "PNG") for i in range(3)]
    source.append({"image": b"\x89PNG not really", "image_id": "broken.png"})
    with pytest.raises(image_io.ImageFileError, match="broken.png"):
        _take(_train(source, batch_size=4), 1)

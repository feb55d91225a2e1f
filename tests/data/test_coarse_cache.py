"""Tests for inpaint_jax.data.coarse_cache: building and reusing the cache, fingerprints, patches."""

import json
import types
from pathlib import Path

import numpy as np
import pytest

from inpaint_jax import inference, masks, parallel, two_stage
from inpaint_jax.data import coarse_cache, datasets
from tests.test_two_stage import refine_config

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


@pytest.fixture(scope="module")
def config(photo_dir, glcic_workdir):
    """The tiny two-stage config over the generated photos (their TFDS build is the GLCIC's)."""
    return refine_config(photo_dir, str(Path(glcic_workdir).parent / "tfds"), glcic_workdir)


@pytest.fixture(scope="module")
def coarse(glcic_workdir):
    return inference.load_model(glcic_workdir)


@pytest.fixture(scope="module")
def built(config, coarse, tmp_path_factory):
    """(cache root, Datasets) of one `create_datasets` call."""
    root = tmp_path_factory.mktemp("coarse_cache")
    data = coarse_cache.create_datasets(config, parallel.create_mesh(), coarse, str(root))
    return root, data


def _count_coarse_runs(monkeypatch) -> list:
    """Makes two_stage.coarse_complete record each call (and still run)."""
    calls = []
    original = two_stage.coarse_complete

    def counted(*args, **kwargs):
        calls.append(args[1].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(two_stage, "coarse_complete", counted)
    return calls


def test_both_splits_are_cached_under_the_fingerprint(built, config, coarse):
    root, _ = built
    (cache,) = root.iterdir()
    assert cache.name == coarse_cache.fingerprint(config, coarse)
    train = sorted((cache / "train").glob("*.npz"))
    assert len(train) == 2 * 15  # 15 training photos x masks_per_image 2
    assert len(sorted((cache / "eval").glob("*.npz"))) == 2 * 1  # 1 held-out photo
    assert train[0].name == "00000000_0.npz" and train[1].name == "00000000_1.npz"
    with np.load(train[0]) as entry:
        image, mask, merged = entry["image"], entry["mask"], entry["merged"]
    assert image.dtype == mask.dtype == merged.dtype == np.uint8
    assert image.shape[:2] == mask.shape[:2] == merged.shape[:2]
    assert mask.any()
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(merged[known], image[known])
    assert (merged[~known] != image[~known]).any()
    # The mask of entry (index, k) is drawn with masks.mask_rng(seed, index, k).
    expected = datasets.mask_fn(config)(masks.mask_rng(config.seed, 0, 0), *image.shape[:2]).mask
    np.testing.assert_array_equal(mask, expected.astype(np.uint8))
    usable = json.loads((cache / "train" / "usable-16px-0.1-0.9-0-of-1.json").read_text())
    assert len(usable["usable"]) + len(usable["skipped"]) == 30 and usable["usable"]


def test_the_cache_is_reused_and_an_interrupted_build_resumes(built, config, coarse,
                                                              monkeypatch):
    root, _ = built
    calls = _count_coarse_runs(monkeypatch)
    coarse_cache.create_datasets(config, parallel.create_mesh(), coarse, str(root))
    assert calls == []  # every entry and index is there: nothing is computed again

    (cache,) = root.iterdir()
    (cache / "train" / "00000003_1.npz").unlink()  # as if the build had stopped there
    (cache / "train" / "usable-16px-0.1-0.9-0-of-1.json").unlink()
    coarse_cache.create_datasets(config, parallel.create_mesh(), coarse, str(root))
    assert len(calls) == 1
    assert (cache / "train" / "00000003_1.npz").exists()


def test_patches_from_the_cache_follow_the_rules(built):
    root, data = built
    (cache_dir,) = root.iterdir()
    names = sorted(p.stem for p in (cache_dir / "train").glob("*.npz"))
    cache = coarse_cache.CacheSource(cache_dir / "train", names)
    batches = coarse_cache.create_train_iterator(cache, batch_size=4, patch_size=16,
                                                 shift_fraction=0.2, hole_range=(0.1, 0.9),
                                                 seed=0)
    batch = next(batches)
    assert batch["inputs"].shape == (4, 16, 16, 20)
    fractions = batch["mask"].mean(axis=(1, 2, 3))
    assert np.all((fractions >= 0.1) & (fractions <= 0.9))
    hole = batch["mask"] > 0
    # Known pixels of the merged image are the ground truth; the main mask is channel 15.
    np.testing.assert_array_equal(np.where(hole, 0, batch["inputs"][..., :3]),
                                  np.where(hole, 0, batch["image"]))
    np.testing.assert_array_equal(batch["inputs"][..., 15:16], batch["mask"])

    evals = [next(coarse_cache.create_eval_iterator(cache, batch_size=4, patch_size=16,
                                                    shift_fraction=0.2, hole_range=(0.1, 0.9),
                                                    seed=5)) for _ in range(2)]
    np.testing.assert_array_equal(evals[0]["inputs"], evals[1]["inputs"])  # fixed patches
    assert evals[0]["valid"].all()

    # create_datasets' own iterators: global batches of 16 px patches, the eval split's fixed.
    train_batch = next(data.train)
    assert train_batch["inputs"].shape == (8, 16, 16, 20)
    assert train_batch["image"].shape == (8, 16, 16, 3)
    first, second = (list(data.eval_batches()) for _ in range(2))
    assert len(first) == 1 and first[0]["valid"].sum() == 2  # 1 photo x 2 masks
    np.testing.assert_array_equal(first[0]["inputs"], second[0]["inputs"])


def _stub_coarse(step=6, width=0.125):
    """What `fingerprint` reads of a loaded coarse model."""
    model_config = types.SimpleNamespace(to_dict=lambda: {"family": "glcic",
                                                          "width_multiplier": width})
    return types.SimpleNamespace(name="glcic", step=step, model_config=model_config)


@pytest.mark.parametrize("change", [
    {"model.coarse_size": 24}, {"data.max_side": 64}, {"masks_per_image": 3}, {"seed": 1},
    {"eval.mask_seed": 7}, {"mask.kind": "center"}, {"coarse_workdir": "/elsewhere"},
    {"data.manual_dir": "/other/photos"},
], ids=lambda change: next(iter(change)))
def test_fingerprint_changes_with_what_the_entries_depend_on(config, change):
    changed = refine_config(config.data.manual_dir, config.data.data_dir, config.coarse_workdir)
    for key, value in change.items():
        *parents, leaf = key.split(".")
        node = changed
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    assert coarse_cache.fingerprint(changed, _stub_coarse()) != coarse_cache.fingerprint(
        config, _stub_coarse())


def test_fingerprint_ignores_the_patch_settings_and_names_the_coarse_model(config):
    base = coarse_cache.fingerprint(config, _stub_coarse())
    assert len(base) == 16 and base == coarse_cache.fingerprint(config, _stub_coarse())
    patches = config.copy_and_resolve_references()
    patches.data.crop_size = 32
    patches.patch_hole_range = (0.2, 0.8)
    patches.model.shift_fraction = 0.3
    patches.global_batch_size = 4
    assert coarse_cache.fingerprint(patches, _stub_coarse()) == base
    assert coarse_cache.fingerprint(config, _stub_coarse(step=7)) != base
    assert coarse_cache.fingerprint(config, _stub_coarse(width=0.25)) != base


def test_no_usable_patch_is_a_clear_error(config, coarse, tmp_path):
    strict = config.copy_and_resolve_references()
    strict.patch_hole_range = (0.99, 1.0)
    strict.masks_per_image = 1
    with pytest.raises(coarse_cache.CoarseCacheError, match="smaller config.data.crop_size"):
        coarse_cache.create_datasets(strict, parallel.create_mesh(), coarse, str(tmp_path))

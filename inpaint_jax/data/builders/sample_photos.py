"""`sample_photos`: the RGB photographs that installed Python packages ship.

Found by path on disk, so nothing is downloaded and no package is imported:

* scikit-image (a core dependency): astronaut, chelsea, coffee,
  motorcycle_left, rocket from ``skimage/data`` (the files in the wheel; the
  ones skimage fetches with pooch are not used);
* scikit-learn (optional): china, flower from ``sklearn/datasets/images``;
* matplotlib (optional): grace_hopper from ``mpl-data/sample_data``.

Left out on purpose: greyscale images, synthetic images (colour wheel,
phantom, chessboards), logos and text, microscopy / medical / astronomy
images, and motorcycle_right (near-duplicate of motorcycle_left).

Splits: `eval` is always skimage's chelsea and coffee (present whatever else
is installed); `train` is the rest (3 to 6 photos). A package that is not
installed is skipped with a log line. The dataset is built once: installing
scikit-learn or matplotlib later does not change an existing build.
"""

import importlib.util
import logging
from pathlib import Path

from inpaint_jax.data.builders import common

logger = logging.getLogger(__name__)

# package -> (folder inside the package, file names) of the photos used.
_PHOTOS = {
    "skimage": ("data", ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
                         "rocket.jpg")),
    "sklearn": ("datasets/images", ("china.jpg", "flower.jpg")),
    "matplotlib": ("mpl-data/sample_data", ("grace_hopper.jpg",)),
}

EVAL_IDS = frozenset({"skimage/chelsea", "skimage/coffee"})


def _package_dir(package: str) -> Path | None:
    """The installation folder of `package`, without importing it; None if not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_sample_photos() -> dict[str, Path]:
    """Paths of the photos of the installed packages, by image id ("package/name")."""
    photos = {}
    for package, (folder, names) in _PHOTOS.items():
        package_dir = _package_dir(package)
        if package_dir is None:
            logger.info("sample_photos: %s is not installed; skipping its photos %s",
                        package, names)
            continue
        for name in names:
            path = package_dir / folder / name
            if path.is_file():
                photos[f"{package}/{Path(name).stem}"] = path
            else:
                logger.warning("sample_photos: %s is installed but has no %s; skipping it",
                               package, path)
    return photos


class SamplePhotos(common.EncodedImageBuilder):
    """RGB photographs shipped with scikit-image, scikit-learn and matplotlib."""

    name = "sample_photos"
    SPLITS = ("train", "eval")

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is on disk already.
        photos = find_sample_photos()
        generators = {}
        for split in self.SPLITS:
            chosen = {i: p for i, p in photos.items() if (i in EVAL_IDS) == (split == "eval")}
            images = common.validate_images(common.file_candidates(chosen),
                                            label=f"{self.name} {split}")
            generators[split] = self._generate_examples(images)
        return generators

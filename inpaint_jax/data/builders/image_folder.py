"""`image_folder`: a user's own folder of photos, split into `train` and `eval`.

Every image file under the folder (recursively; extensions in
`common.IMAGE_EXTENSIONS`, any case) becomes a record whose id is its path
relative to the folder without the extension.

Split: an image goes to `eval` when a hash of its id, read as a number in
[0, 1), is below `eval_fraction`, so the split of a photo never depends on the
other photos: adding photos leaves the old ones where they were. Two
exceptions keep both splits non-empty: when no image hashes below the
fraction, the one with the smallest hash goes to `eval`; when all do, the one
with the largest hash stays in `train` (in small folders, adding photos can
therefore move that one image back).

Several folders share one `data_dir` without colliding: each folder gets its
own builder config, named after the folder plus a digest of its absolute
path, `eval_fraction` and its file listing (names, sizes, modification
times). A changed folder therefore gets a fresh build on its next use; older
builds stay under ``<data_dir>/image_folder/`` until deleted.
"""

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path

import tensorflow_datasets as tfds

from inpaint_jax.data.builders import common

logger = logging.getLogger(__name__)

_INSTRUCTIONS = f"""\
manual_dir is a folder of your own photos, in any layout, e.g.:
  my_photos/
    IMG_0001.jpg
    trips/2019/beach.png
Image files ({', '.join(common.IMAGE_EXTENSIONS)}, any case) are found
recursively; other files and hidden files are ignored. At least 2 readable
images are needed (1 for train, 1 for eval)."""

DEFAULT_EVAL_FRACTION = 0.05


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    """Which folder to read and how much of it to hold out for `eval`."""

    folder: str = ""
    eval_fraction: float = DEFAULT_EVAL_FRACTION


def _hash_fraction(image_id: str) -> float:
    """A number in [0, 1) fixed by `image_id` alone."""
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_eval(image_ids: list[str], eval_fraction: float) -> set[str]:
    """The ids that go to `eval` (see the module docstring); needs >= 2 ids."""
    fractions = {image_id: _hash_fraction(image_id) for image_id in image_ids}
    by_hash = sorted(fractions, key=fractions.__getitem__)
    num_eval = sum(fraction < eval_fraction for fraction in fractions.values())
    num_eval = min(max(num_eval, 1), len(by_hash) - 1)
    return set(by_hash[:num_eval])


def config_for_folder(folder: str | Path,
                      eval_fraction: float = DEFAULT_EVAL_FRACTION) -> ImageFolderConfig:
    """The builder config of `folder` (see the module docstring for its name)."""
    if not 0 < eval_fraction < 1:
        raise ValueError("image_folder eval_fraction must lie strictly between 0 and 1, "
                         f"got {eval_fraction}")
    folder = Path(folder).expanduser().resolve()
    common.require_dir(folder, "image_folder manual_dir", _INSTRUCTIONS)
    listing = []
    for image_id, path in common.find_image_files(folder, folder).items():
        stat = path.stat()
        listing.append((image_id, stat.st_size, stat.st_mtime_ns))
    identity = json.dumps([str(folder), eval_fraction, listing]).encode("utf-8")
    slug = re.sub(r"[^a-z0-9]+", "_", folder.name.lower()).strip("_") or "folder"
    return ImageFolderConfig(
        name=f"{slug}_{hashlib.sha256(identity).hexdigest()[:12]}",
        description=(f"Photos under {folder} ({len(listing)} image files), "
                     f"eval_fraction={eval_fraction}."),
        folder=str(folder),
        eval_fraction=eval_fraction,
    )


class ImageFolder(common.EncodedImageBuilder):
    """A user's own folder of photos, split into train and eval by a hash of each file's path."""

    name = "image_folder"
    SPLITS = ("train", "eval")
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    @classmethod
    def from_options(cls, *, data_dir: str, manual_dir: str | None = None,
                     eval_fraction: float = DEFAULT_EVAL_FRACTION, **unknown) -> "ImageFolder":
        """The builder of the folder `manual_dir`, holding out `eval_fraction` of it."""
        common.reject_options(cls.name, unknown, accepted=("eval_fraction",))
        if manual_dir is None:
            raise common.ManualDirError(
                f"image_folder needs manual_dir, the folder of photos.\n{_INSTRUCTIONS}")
        return cls(data_dir=data_dir, config=config_for_folder(manual_dir, eval_fraction))

    def _split_generators(self, dl_manager):
        del dl_manager  # The folder comes from the config.
        config = self.builder_config
        if not isinstance(config, ImageFolderConfig):
            raise ValueError(
                "image_folder needs config=config_for_folder(folder); or use "
                "inpaint_jax.data.sources.build_dataset('image_folder', manual_dir=folder, ...)")
        folder = Path(config.folder)
        files = common.find_image_files(folder, folder)
        logger.info("image_folder: decoding %d image files under %s", len(files), folder)
        # Decode everything first so that the split is made among readable images only.
        valid = common.validate_images(common.file_candidates(files),
                                       label=f"image_folder {folder}")
        sizes = {image.image_id: (image.height, image.width) for image in valid}
        if len(sizes) < 2:
            raise common.NotEnoughImagesError(
                f"image_folder {folder}: only {len(sizes)} readable image; at least 2 are "
                "needed (1 for train, 1 for eval). Add photos to the folder.")
        eval_ids = assign_eval(list(sizes), config.eval_fraction)

        def images(in_eval: bool):
            for image_id, (height, width) in sizes.items():
                if (image_id in eval_ids) == in_eval:
                    data = files[image_id].read_bytes()
                    yield common.ValidImage(image_id, data, height, width)

        return {"train": self._generate_examples(images(in_eval=False)),
                "eval": self._generate_examples(images(in_eval=True))}

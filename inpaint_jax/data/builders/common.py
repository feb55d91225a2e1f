"""What every image builder here shares: the record format, finding image files,
validating them, and the base builder class.

Records hold the ORIGINAL encoded file bytes (decoding happens later, in the
grain pipeline) plus a stable `image_id` and the upright image size:

    image     bytes   the file exactly as found on disk (or in the tar archive)
    image_id  str     relative path without extension, e.g. "trips/2019/IMG_0042"
    height    int32   image height after EXIF rotation
    width     int32   image width after EXIF rotation

Every candidate file is fully decoded once at build time. Files that cannot be
decoded (corrupt, truncated, not an image, unreadable) are skipped and logged
with `logging.warning`, each by name and then as a count per split; a split
left with no readable image raises `NotEnoughImagesError`.
"""

import collections
import concurrent.futures
import dataclasses
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from inpaint_jax.image_io import ImageFileError, decode_image

logger = logging.getLogger(__name__)

# File name extensions (lower case) taken to be images; matched case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Threads that decode candidate files in parallel at build time (Pillow releases
# the GIL while decoding). Capped because each one holds a decoded float image.
_DECODE_THREADS = min(8, os.cpu_count() or 1)

# Skipped file names repeated in the per-split summary line (each one was also
# logged on its own line when it was skipped).
_SUMMARY_NAMES = 20


class ManualDirError(ValueError):
    """`manual_dir` is missing, empty, or not in the layout a builder expects."""


class NotEnoughImagesError(ValueError):
    """A split (or a whole folder) has too few readable images to build a dataset."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A file that may be an image: its id, a name for messages, and how to read its bytes."""

    image_id: str
    name: str
    read: Callable[[], bytes]


@dataclasses.dataclass(frozen=True)
class ValidImage:
    """A candidate that decoded: its original bytes and its upright size."""

    image_id: str
    data: bytes
    height: int
    width: int

    def as_example(self) -> dict:
        """The TFDS example dict for this image."""
        return {"image": self.data, "image_id": self.image_id,
                "height": self.height, "width": self.width}


def image_features() -> tfds.features.FeaturesDict:
    """The TFDS features of every builder here (see the module docstring)."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(), dtype=np.object_),
        "image_id": tfds.features.Text(),
        "height": tfds.features.Scalar(dtype=np.int32),
        "width": tfds.features.Scalar(dtype=np.int32),
    })


def is_image_name(name: str) -> bool:
    """Whether a file name has one of `IMAGE_EXTENSIONS` (any case) and is not hidden."""
    base = PurePosixPath(name).name
    return not base.startswith(".") and PurePosixPath(base).suffix.lower() in IMAGE_EXTENSIONS


def image_id_for(relative_path: str) -> str:
    """The image id of a file: its POSIX relative path without the extension."""
    return str(PurePosixPath(relative_path).with_suffix(""))


def find_image_files(folder: Path, root: Path) -> dict[str, Path]:
    """Image files under `folder` (recursively), by image id relative to `root`, sorted by id.

    Hidden files and folders (names starting with ".") are left out. Of two
    files whose ids collide (``a.jpg`` and ``a.png``) the first in sorted order
    is kept and the other is logged and left out.
    """
    relative_paths = []
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        relative_paths += [Path(directory, name).relative_to(root).as_posix()
                           for name in names if is_image_name(name)]
    files: dict[str, Path] = {}
    for relative in sorted(relative_paths):
        image_id = image_id_for(relative)
        if image_id in files:
            logger.warning("Skipping %s: its image id %r is taken by %s",
                           root / relative, image_id, files[image_id])
        else:
            files[image_id] = root / relative
    return dict(sorted(files.items()))


def file_candidates(files: dict[str, Path]) -> Iterator[Candidate]:
    """Candidates for image files given by id (see `find_image_files`)."""
    return (Candidate(image_id, str(path), path.read_bytes) for image_id, path in files.items())


def bytes_reader(data: bytes) -> Callable[[], bytes]:
    """A `Candidate.read` for bytes already in memory (e.g. read from a tar stream)."""
    return lambda: data


def _decode_candidate(candidate: Candidate) -> ValidImage | str:
    """The candidate as a `ValidImage`, or the reason it cannot be used."""
    try:
        data = candidate.read()
        height, width, _ = decode_image(data, candidate.name).shape
    except (ImageFileError, OSError) as error:
        return str(error)
    return ValidImage(candidate.image_id, data, height, width)


def validate_images(candidates: Iterable[Candidate], *, label: str) -> Iterator[ValidImage]:
    """Decodes each candidate once and yields those that decode, in input order.

    Unreadable files are logged and counted; `label` (e.g. "paris_street_view
    train (/data/paris/paris_train_original)") names the split in messages.
    Raises `NotEnoughImagesError` at the end if nothing was readable.
    """
    num_valid = 0
    skipped: list[str] = []
    pending: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(_DECODE_THREADS) as pool:

        def finish_oldest() -> Iterator[ValidImage]:
            nonlocal num_valid
            candidate, future = pending.popleft()
            result = future.result()
            if isinstance(result, ValidImage):
                num_valid += 1
                yield result
            else:
                logger.warning("%s: skipping unreadable image %s: %s",
                               label, candidate.name, result)
                skipped.append(candidate.name)

        for candidate in candidates:
            pending.append((candidate, pool.submit(_decode_candidate, candidate)))
            if len(pending) >= 4 * _DECODE_THREADS:
                yield from finish_oldest()
        while pending:
            yield from finish_oldest()

    if skipped:
        shown = ", ".join(skipped[:_SUMMARY_NAMES])
        if len(skipped) > _SUMMARY_NAMES:
            shown += ", ..."
        logger.warning("%s: skipped %d unreadable image file(s): %s", label, len(skipped), shown)
    if num_valid == 0:
        if skipped:
            found = f"all {len(skipped)} image files are unreadable"
        else:
            found = "no image files were found"
        raise NotEnoughImagesError(
            f"{label}: {found} (image extensions: {', '.join(IMAGE_EXTENSIONS)}). "
            "Check the path and that it holds readable image files."
        )


def require_dir(path: Path, what: str, instructions: str) -> Path:
    """`path` if it is a non-empty directory; otherwise a `ManualDirError` with `instructions`."""
    if not path.is_dir():
        raise ManualDirError(f"{what} {path} is not a directory.\n{instructions}")
    if not any(path.iterdir()):
        raise ManualDirError(f"{what} {path} is empty.\n{instructions}")
    return path


def reject_options(dataset: str, unknown: dict, *, accepted: tuple[str, ...]) -> None:
    """Raises a `ValueError` naming the `unknown` options, if any, and the `accepted` ones."""
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for dataset {dataset!r}; "
                         f"it accepts: {list(accepted) or 'none'}")


class EncodedImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the builders here: features, info and example generation.

    Subclasses set `name`, `SPLITS`, `MANUAL_DOWNLOAD_INSTRUCTIONS` (None when
    they need no manual_dir), `HOMEPAGE`, `CITATION` and write
    `_split_generators`, returning ``{split: self._generate_examples(images)}``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    SPLITS: tuple[str, ...] = ()
    HOMEPAGE: str | None = None
    CITATION: str | None = None

    @classmethod
    def from_options(cls, *, data_dir: str, manual_dir: str | None = None,
                     **options) -> "EncodedImageBuilder":
        """The builder for `data_dir`; `manual_dir` is read when the dataset is prepared.

        Subclasses that take options (builder kwargs) override this.
        """
        del manual_dir  # Passed to TFDS in the DownloadConfig of download_and_prepare.
        reject_options(cls.name, options, accepted=())
        return cls(data_dir=data_dir)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The file defining the builder (TFDS looks for a checksums.tsv beside it).

        Found with `inspect`, TFDS' own fallback: TFDS 4.9.10 resolves it through
        `importlib_resources`, which it imports but does not declare as a
        dependency on Python >= 3.9 (tensorflow/datasets#11212).
        """
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=inspect.cleandoc(type(self).__doc__ or ""),
            features=image_features(),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _manual_path(self, dl_manager: tfds.download.DownloadManager) -> Path:
        """`manual_dir` as a local path (TFDS checks that it is a non-empty directory)."""
        return Path(os.fspath(dl_manager.manual_dir))

    def _generate_examples(self, images: Iterable[ValidImage]):
        for image in images:
            yield image.image_id, image.as_example()

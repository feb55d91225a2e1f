"""`places365_hr`: Places365-Standard at its original high resolution, from `manual_dir`.

Each split is read from its extracted folder when present, otherwise straight
from the original tar archive (streamed with `tarfile`, nothing extracted).
Image ids are the paths inside the archive without extension (e.g.
``data_large/a/abbey/00000001``), the same in both layouts.
"""

import tarfile
from collections.abc import Iterator
from pathlib import Path

from inpaint_jax.data.builders import common

# split -> (extracted folder, original tar archive) inside manual_dir.
_SPLIT_SOURCES = {
    "train": ("data_large", "train_large_places365standard.tar"),
    "validation": ("val_large", "val_large.tar"),
}

_INSTRUCTIONS = """\
manual_dir must hold Places365-Standard high-resolution images
(http://places2.csail.mit.edu/download.html, "High resolution images"), for
each split either the extracted folder or the original tar file:
  train:       <manual_dir>/data_large/  (class folders, e.g. data_large/a/abbey/00000001.jpg)
               or <manual_dir>/train_large_places365standard.tar
  validation:  <manual_dir>/val_large/   (e.g. val_large/Places365_val_00000001.jpg)
               or <manual_dir>/val_large.tar"""


def tar_candidates(archive: Path) -> Iterator[common.Candidate]:
    """Candidates for the image members of a tar archive, read in one sequential pass."""
    with tarfile.open(archive, mode="r|*") as tar:
        while (member := tar.next()) is not None:
            if member.isfile() and common.is_image_name(member.name):
                data = tar.extractfile(member).read()
                yield common.Candidate(image_id=common.image_id_for(member.name),
                                       name=f"{archive}:{member.name}",
                                       read=common.bytes_reader(data))
            # A streamed TarFile keeps every member it has seen; drop them so
            # that memory stays flat over the 1.8 million training images.
            tar.members = []


class Places365Hr(common.EncodedImageBuilder):
    """Places365-Standard scene photos at high resolution: train and validation."""

    name = "places365_hr"
    SPLITS = tuple(_SPLIT_SOURCES)
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    HOMEPAGE = "http://places2.csail.mit.edu/"
    CITATION = """\
@article{zhou2017places,
  title={Places: A 10 million Image Database for Scene Recognition},
  author={Zhou, Bolei and Lapedriza, Agata and Khosla, Aditya and Oliva, Aude
          and Torralba, Antonio},
  journal={IEEE Transactions on Pattern Analysis and Machine Intelligence},
  year={2017}
}"""

    def _split_generators(self, dl_manager):
        root = self._manual_path(dl_manager)
        generators = {}
        for split, (folder_name, tar_name) in _SPLIT_SOURCES.items():
            folder, archive = root / folder_name, root / tar_name
            if folder.is_dir():
                source = folder
                candidates = common.file_candidates(common.find_image_files(folder, root))
            elif archive.is_file():
                source = archive
                candidates = tar_candidates(archive)
            else:
                raise common.ManualDirError(
                    f"{self.name} {split}: neither {folder} nor {archive} exists."
                    f"\n{_INSTRUCTIONS}")
            images = common.validate_images(candidates, label=f"{self.name} {split} ({source})")
            generators[split] = self._generate_examples(images)
        return generators

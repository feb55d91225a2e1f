"""`paris_street_view`: Paris StreetView as used by Context Encoders, from `manual_dir`."""

from inpaint_jax.data.builders import common

_SPLIT_FOLDERS = {"train": "paris_train_original", "eval": "paris_eval_gt"}

_INSTRUCTIONS = """\
manual_dir must hold the Paris StreetView images in the official layout
(the dataset is distributed on request by the authors of Context Encoders,
https://github.com/pathak22/context-encoder):
  <manual_dir>/paris_train_original/   training images (14,900 files)
  <manual_dir>/paris_eval_gt/          evaluation images (100 files)"""


class ParisStreetView(common.EncodedImageBuilder):
    """Paris StreetView (Doersch et al. 2012) in the Context Encoder train / eval split."""

    name = "paris_street_view"
    SPLITS = tuple(_SPLIT_FOLDERS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    HOMEPAGE = "http://graphics.cs.cmu.edu/projects/whatMakesParis/"
    CITATION = """\
@article{doersch2012paris,
  title={What Makes Paris Look like Paris?},
  author={Doersch, Carl and Singh, Saurabh and Gupta, Abhinav and Sivic, Josef
          and Efros, Alexei A.},
  journal={ACM Transactions on Graphics (SIGGRAPH)},
  volume={31}, number={4}, year={2012}
}"""

    def _split_generators(self, dl_manager):
        root = self._manual_path(dl_manager)
        generators = {}
        for split, folder_name in _SPLIT_FOLDERS.items():
            folder = root / folder_name
            common.require_dir(folder, f"{self.name} {split} folder", _INSTRUCTIONS)
            candidates = common.file_candidates(common.find_image_files(folder, root))
            images = common.validate_images(candidates, label=f"{self.name} {split} ({folder})")
            generators[split] = self._generate_examples(images)
        return generators

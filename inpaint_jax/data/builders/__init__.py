"""TFDS builders of the datasets this project trains on; importing registers them with TFDS.

Use them through `inpaint_jax.data.sources`, or with TFDS directly, e.g.
``tfds build paris_street_view --imports=inpaint_jax.data.builders
--manual_dir=... --file_format=array_record``.
"""

from inpaint_jax.data.builders.common import ManualDirError, NotEnoughImagesError
from inpaint_jax.data.builders.image_folder import ImageFolder, config_for_folder
from inpaint_jax.data.builders.paris_street_view import ParisStreetView
from inpaint_jax.data.builders.places365_hr import Places365Hr
from inpaint_jax.data.builders.sample_photos import SamplePhotos

# The builders defined here, by dataset name.
BUILDERS = {cls.name: cls for cls in (SamplePhotos, ImageFolder, ParisStreetView, Places365Hr)}

__all__ = ["BUILDERS", "ImageFolder", "ManualDirError", "NotEnoughImagesError", "ParisStreetView",
           "Places365Hr", "SamplePhotos", "config_for_folder"]

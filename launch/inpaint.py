"""Inpaints photos with a trained model.

  python -m launch.inpaint --workdir=DIR --image=photo.jpg --mask=mask.png --output=out.png
  python -m launch.inpaint --checkpoint=DIR/checkpoints/600 --image=photo.png --output=out.png
  python -m launch.inpaint --workdir=DIR --image=photos/ --mask=masks/ --output=results/
  python -m launch.inpaint --method=nps --content=DIR --vgg=vgg19.npz --image=photo.png \
      --mask=mask.png --output=out.png
  python -m launch.inpaint --method=two_stage --coarse=DIR --refine=DIR --image=photo.jpg \
      --mask=mask.png --output=out.png

Masks are white where holes are (a mask file with transparent pixels marks
holes by transparency instead). Without --mask, each image's own alpha channel
is its mask: transparent pixels are filled. Images of any size, grey or with
alpha, are accepted; the result is RGB, known pixels unchanged.

Folders: images and masks are paired by file name without extension
(photo.jpg + photo.png); files without a partner are listed and skipped, and
each result is written as <output>/<name>.png into the existing --output folder.
--max_size=N runs the network on images scaled down to N pixels on the longer
side; --postprocess blends the filled holes into their surroundings (GLCIC).

--method=nps is multi-scale neural patch synthesis (Yang et al., CVPR 2017):
the model of --content (the NPS content network, or any other model such as
GLCIC) predicts the hole's content at 128 px, then the hole is optimised at
three scales so that its VGG-19 feature patches (--vgg weights) match patches
outside it. At the paper's setting (512 px image, 256 px hole, 3 x 100
iterations) it takes about 17 minutes on 2 CPU cores (`python -m
launch.benchmark nps`); --nps_iterations trades quality for time. See
inpaint_jax/nps.py.

--method=two_stage is two-stage high-resolution inpainting (Moskalenko et al.,
2021) for large photos: the --coarse model fills the holes at 512 px (the
refinement run's coarse size), and the --refine network restores texture at
full resolution from the result and four shifted copies. See
inpaint_jax/two_stage.py.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from absl import app, flags
from PIL import Image
from tqdm import tqdm

from inpaint_jax import image_io, inference, nps, two_stage
from inpaint_jax.weights import vgg

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir; its newest checkpoint is used.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Checkpoint step directory (<workdir>/checkpoints/<step>), instead of "
    "--workdir.")
_IMAGE = flags.DEFINE_string("image", None, "Image file, or a folder of images.")
_MASK = flags.DEFINE_string(
    "mask", None, "Mask file (white = hole), or a folder of masks named like the images. "
    "Default: each image's alpha channel (transparent = hole).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Output file (its extension picks the format), or an existing folder when "
    "--image is a folder.")
_METHOD = flags.DEFINE_enum(
    "method", "model", ["model", "nps", "two_stage"], "How holes are filled: model = the "
    "network of --workdir or --checkpoint; nps = neural patch synthesis over the network of "
    "--content, with the VGG-19 of --vgg; two_stage = the coarse model of --coarse at low "
    "resolution, then the refinement network of --refine at full resolution.")
_CONTENT = flags.DEFINE_string(
    "content", None, "--method=nps: workdir or checkpoint step directory of the content network "
    "(a configs/nps_content.py run, or any other model, e.g. GLCIC).")
_VGG = flags.DEFINE_string(
    "vgg", None, "--method=nps: VGG-19 weights: torchvision .pth, Keras .h5 or the .npz that "
    "launch.convert_vgg writes.")
_NPS_ITERATIONS = flags.DEFINE_integer(
    "nps_iterations", None, "--method=nps: optimisation steps at each scale (default: "
    f"{nps.NPSSettings().iterations}, as in the paper's code).", lower_bound=0)
_REFINE = flags.DEFINE_string(
    "refine", None, "--method=two_stage: workdir or checkpoint step directory of the refinement "
    "network (a configs/two_stage.py run).")
_COARSE = flags.DEFINE_string(
    "coarse", None, "--method=two_stage: workdir or checkpoint step directory of the coarse model "
    "(GLCIC, PGGAN, DFNet, ...); default: the one the refinement network was trained with.")
_POSTPROCESS = flags.DEFINE_bool(
    "postprocess", False, "Blend filled holes into their surroundings (GLCIC's fast marching + "
    "Poisson blending).")
_MAX_SIZE = flags.DEFINE_integer(
    "max_size", None, "Run the network on images scaled down to this longer side (pixels); "
    "known pixels stay at full resolution.", lower_bound=1)
flags.mark_flags_as_required(["image", "output"])
flags.mark_flags_as_mutual_exclusive(["workdir", "checkpoint"])

# The flags that only one --method uses.
_METHOD_FLAGS = {"model": ("workdir", "checkpoint"), "nps": ("content", "vgg", "nps_iterations"),
                 "two_stage": ("refine", "coarse")}


@flags.multi_flags_validator(["method", *(name for names in _METHOD_FLAGS.values()
                                          for name in names)])
def _check_method_flags(values) -> bool:
    """--workdir or --checkpoint go with --method=model, --content (and --vgg) with nps."""
    method = values["method"]
    misplaced = [f"--{name}" for other, names in _METHOD_FLAGS.items() if other != method
                 for name in names if values[name] is not None]
    if misplaced:
        raise flags.ValidationError(f"{', '.join(misplaced)} cannot be used with "
                                    f"--method={method}")
    if method == "model" and values["workdir"] is None and values["checkpoint"] is None:
        raise flags.ValidationError("--method=model needs --workdir or --checkpoint")
    if method == "nps" and values["content"] is None:
        raise flags.ValidationError("--method=nps needs --content: the workdir of the content "
                                    "network (any inpaint_jax model)")
    if method == "two_stage" and values["refine"] is None:
        raise flags.ValidationError("--method=two_stage needs --refine: the workdir of the "
                                    "refinement network (a configs/two_stage.py run)")
    return True


# Per-image problems that skip that image in folder mode instead of stopping the run.
_BAD_INPUT_ERRORS = (image_io.ImageFileError, image_io.MaskError, OSError)


@dataclasses.dataclass(frozen=True)
class Job:
    """One image to inpaint; `mask` None means the image's alpha channel."""

    image: Path
    mask: Path | None
    output: Path


def plan_jobs(image: str, mask: str | None, output: str) -> list[Job]:
    """The jobs for the --image, --mask and --output paths, checked before any work.

    Raises app.UsageError for missing inputs, a missing output directory, or
    folders whose files do not pair up.
    """
    image_path, output_path = Path(image), Path(output)
    mask_path = None if mask is None else Path(mask)
    if image_path.is_dir():
        return _folder_jobs(image_path, mask_path, output_path)
    for name, path in (("--image", image_path), ("--mask", mask_path)):
        if path is not None and not path.is_file():
            raise app.UsageError(f"{name} {path} is not a file or folder")
    if output_path.is_dir():
        raise app.UsageError(f"--output {output_path} is a folder; name the output file, "
                             "e.g. --output=result.png")
    if not output_path.parent.is_dir():
        raise app.UsageError(f"the folder of --output {output_path} does not exist; "
                             "create it first")
    return [Job(image_path, mask_path, output_path)]


def _folder_jobs(image_dir: Path, mask_dir: Path | None, output_dir: Path) -> list[Job]:
    """One job per image of `image_dir` with a mask of the same name (or its alpha)."""
    if not output_dir.is_dir():
        raise app.UsageError(f"--image is a folder, so --output must be an existing folder; "
                             f"{output_dir} is not")
    if mask_dir is not None and not mask_dir.is_dir():
        raise app.UsageError(f"--image is a folder, so --mask must be a folder too (or left "
                             f"out to use alpha channels); {mask_dir} is not")
    inputs = {image_dir.resolve()} | ({mask_dir.resolve()} if mask_dir else set())
    if output_dir.resolve() in inputs:
        raise app.UsageError(f"--output {output_dir} is an input folder; results would "
                             "overwrite inputs, so choose another folder")
    images = _images_by_name(image_dir)
    if not images:
        raise app.UsageError(f"--image folder {image_dir} holds no image files")
    masks = images if mask_dir is None else _images_by_name(mask_dir)
    unmatched = sorted(str(paths[name]) for paths, others in ((images, masks), (masks, images))
                       for name in paths.keys() - others.keys())
    if unmatched:
        logging.warning("Skipping %d files that have no partner of the same name: %s",
                        len(unmatched), ", ".join(unmatched))
    names = sorted(images.keys() & masks.keys())
    if not names:
        raise app.UsageError(f"no image in {image_dir} has a mask of the same name (without "
                             f"extension) in {mask_dir}")
    return [Job(images[name], None if mask_dir is None else masks[name],
                output_dir / f"{name}.png") for name in names]


def _images_by_name(folder: Path) -> dict[str, Path]:
    """The image files of `folder` by name without extension; other files are ignored."""
    extensions = {ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN}
    by_name: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in extensions:
            by_name.setdefault(path.stem, []).append(path)
    clashes = [", ".join(path.name for path in paths) for paths in by_name.values()
               if len(paths) > 1]
    if clashes:
        raise app.UsageError(f"{folder} has images that differ only in extension ("
                             f"{'; '.join(clashes)}); rename them so that names pair up")
    return {name: paths[0] for name, paths in by_name.items()}


def inpaint_files(model, jobs: list[Job], *, postprocess: bool,
                  max_size: int | None) -> list[str]:
    """Inpaints every job; returns "image: error" for each skipped bad input.

    A single job's errors are raised; with several jobs, unreadable images and
    unusable masks are logged and skipped so that the others still get done.
    """
    failures = []
    for job in tqdm(jobs, unit="image", disable=len(jobs) == 1):
        try:
            image = image_io.read_image(job.image)
            if job.mask is None:
                mask = image_io.read_alpha_mask(job.image)
            else:
                mask = image_io.read_mask(job.mask, expected_shape=image.shape[:2])
            result = inference.inpaint(model, image, mask, postprocess=postprocess,
                                       max_size=max_size)
            image_io.write_image(job.output, result)
        except _BAD_INPUT_ERRORS as error:
            if len(jobs) == 1:
                raise
            logging.error("Skipping %s: %s", job.image, error)
            failures.append(f"{job.image}: {error}")
    return failures


def load_method():
    """The inpainting callable that --method names, and how to describe it in the log."""
    if _METHOD.value == "model":
        model = inference.load_model(_WORKDIR.value or _CHECKPOINT.value)
        return model, f"the {model.name} model of step {model.step}"
    if _METHOD.value == "two_stage":
        model = two_stage.load_two_stage(_REFINE.value, _COARSE.value)
        return model, (f"two-stage inpainting: the {model.coarse.name} model of step "
                       f"{model.coarse.step}, refinement of step {model.step}")
    texture_net, vgg_variables = vgg.load_vgg(_VGG.value, depth=19, config_flag="--vgg")
    content = inference.load_model(_CONTENT.value)
    settings = nps.NPSSettings()
    if _NPS_ITERATIONS.value is not None:
        settings = dataclasses.replace(settings, iterations=_NPS_ITERATIONS.value)
    return (nps.NeuralPatchSynthesis(content, texture_net, vgg_variables, settings),
            f"neural patch synthesis over the {content.name} model of step {content.step}")


def main(argv):
    """Inpaints the image(s) the flags name and writes the results."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    jobs = plan_jobs(_IMAGE.value, _MASK.value, _OUTPUT.value)
    try:
        model, description = load_method()
        failures = inpaint_files(model, jobs, postprocess=_POSTPROCESS.value,
                                 max_size=_MAX_SIZE.value)
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        raise SystemExit(f"Error: {error}") from error
    done = len(jobs) - len(failures)
    logging.info("Inpainted %d of %d images (%s).", done, len(jobs), description)
    if failures:
        raise SystemExit(f"Error: {len(failures)} of {len(jobs)} images failed:\n"
                         + "\n".join(failures))


if __name__ == "__main__":
    app.run(main)

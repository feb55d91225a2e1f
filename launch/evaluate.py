"""Scores a trained model and/or classical baselines on a seeded benchmark.

  python -m launch.evaluate --workdir=/tmp/glcic --baselines=telea,ns,biharmonic
  python -m launch.evaluate --workdir=/tmp/glcic --masks=/data/irregular_masks \\
      --resolution=512,1024,1536,2048 --fit=stretch
  python -m launch.evaluate --baselines=telea --images=~/photos --masks=free_form \\
      --size=256 --output=/tmp/eval
  python -m launch.evaluate --workdir=/tmp/refine --images=~/photos \\
      --resolution=512,1024,1536,2048

Defaults come from the checkpoint's config: its dataset and evaluation split,
its mask generator, parameters and evaluation mask seed, and its crop size.
Prints a table of metrics per hole-area bin and writes manifest.json,
results.json, results.csv and samples_<size>.png to --output (default
<workdir>/eval_<time>). Runs in one process.

A two-stage refinement workdir is scored as the whole two-stage pipeline (its
coarse model from training, or --coarse), next to the row
`<coarse>_upsampled`: the coarse model alone at its working size, scaled up
(the comparison of the two-stage paper's Table 1).
"""

import os

from absl import app, flags

from inpaint_jax import evaluation, inference, masks, two_stage

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Training workdir; its latest checkpoint is scored."
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A checkpoint step folder, instead of --workdir."
)
_COARSE = flags.DEFINE_string(
    "coarse", None, "With a two-stage refinement workdir: the coarse model's workdir (default: the "
    "one it was trained with)."
)
_POSTPROCESS = flags.DEFINE_bool(
    "postprocess", False, "Also score the model with GLCIC post-processing."
)
_BASELINES = flags.DEFINE_list(
    "baselines", [], f"Classical methods: {', '.join(evaluation.BASELINES)}."
)
_DATA = flags.DEFINE_string("data", None, "Dataset name (default: the checkpoint's).")
_SPLIT = flags.DEFINE_string("split", None, "Dataset split (default: the checkpoint's eval split).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the checkpoint's).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Raw files of manual datasets.")
_IMAGES = flags.DEFINE_string("images", None, "A folder of images to use instead of a dataset.")
_NUM_IMAGES = flags.DEFINE_integer(
    "num_images", None, "Score only the first N images.", lower_bound=1
)
_MASKS = flags.DEFINE_string(
    "masks",
    None,
    f"A mask generator ({', '.join(masks.MASK_KINDS)}) or a folder of mask images "
    "(white = hole). Default: the checkpoint's generator.",
)
_MASK_SEED = flags.DEFINE_integer(
    "mask_seed",
    None,
    "Seed of generated masks (default: the checkpoint's config.eval.mask_seed, else 0).",
)
_SIZE = flags.DEFINE_integer(
    "size", None, "Square evaluation size (default: the checkpoint's crop)."
)
_RESOLUTION = flags.DEFINE_list("resolution", [], "Several sizes, e.g. 512,1024,1536,2048.")
_FIT = flags.DEFINE_enum(
    "fit",
    "crop",
    evaluation.FITS,
    "crop: shortest side to the size, centre square; stretch: resize to a square.",
)
_BIN_EDGES = flags.DEFINE_list(
    "bin_edges",
    [str(e) for e in evaluation.DEFAULT_BIN_EDGES],
    "Inner edges of the hole-area bins, as fractions.",
)
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", 4, "Images shown in the sample grids.", lower_bound=0
)
_OUTPUT = flags.DEFINE_string("output", None, "Results folder (default: <workdir>/eval_<time>).")


def _from_config(config, path: str, flag: str):
    """``config.<path>`` of the checkpoint, or a usage error asking for ``--flag``."""
    if config is None:
        raise app.UsageError(f"without a checkpoint, pass --{flag}")
    value = config
    for part in path.split("."):
        value = value[part]
    return value


def _images(config):
    if _IMAGES.value:
        return evaluation.folder_images(_IMAGES.value, limit=_NUM_IMAGES.value)
    name = _DATA.value or _from_config(config, "data.name", "data (or --images)")
    same_data = config is not None and name == config.data.name
    return evaluation.dataset_images(
        name,
        _SPLIT.value or _from_config(config, "data.eval_split", "split"),
        data_dir=_DATA_DIR.value or (config.data.data_dir if config else "~/tensorflow_datasets"),
        manual_dir=_MANUAL_DIR.value or ((config.data.manual_dir or None) if same_data else None),
        limit=_NUM_IMAGES.value,
    )


def _mask_set(config):
    spec = _MASKS.value or _from_config(config, "mask.kind", "masks")
    if spec in masks.MASK_KINDS:
        params = config.mask.params.to_dict() if config and config.mask.kind == spec else {}
        return evaluation.GeneratedMasks(spec, _mask_seed(config), params)
    if os.path.isdir(os.path.expanduser(spec)):
        return evaluation.FolderMasks.from_folder(spec)
    raise app.UsageError(
        f"--masks={spec!r} is neither a mask generator ({', '.join(masks.MASK_KINDS)}) "
        "nor an existing folder of mask images"
    )


def _mask_seed(config) -> int:
    if _MASK_SEED.value is not None:
        return _MASK_SEED.value
    return config.eval.mask_seed if config else 0


def _explicit_sizes():
    """--resolution, else --size, parsed; None when neither is given."""
    if _RESOLUTION.value:
        return evaluation.parse_sizes(_RESOLUTION.value)
    return None if _SIZE.value is None else evaluation.parse_sizes([_SIZE.value])


def _check_flag_combinations(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _WORKDIR.value and _CHECKPOINT.value:
        raise app.UsageError("pass --workdir or --checkpoint, not both")
    if not (_WORKDIR.value or _CHECKPOINT.value or _BASELINES.value):
        raise app.UsageError("nothing to evaluate: pass --workdir/--checkpoint and/or --baselines")
    if not (_OUTPUT.value or _WORKDIR.value):
        raise app.UsageError("pass --output (it defaults to <workdir>/eval_<time> with --workdir)")


def _load_model(path: str):
    """The model of `path`; a two-stage one with the --coarse model if given."""
    if _COARSE.value is None:
        return inference.load_model(path)
    network = inference.load_network(path)
    if network.name != two_stage.REFINEMENT_FAMILY:
        raise app.UsageError(f"--coarse is for two-stage refinement workdirs; {path} holds a "
                             f"{network.name} model")
    return two_stage.from_refinement(network, _COARSE.value)


def main(argv):
    """Scores the checkpoint and baselines the flags name, at each --resolution."""
    _check_flag_combinations(argv)
    try:
        baselines = [evaluation.baseline(name) for name in _BASELINES.value]
        sizes = _explicit_sizes()
        bin_edges = evaluation.parse_bin_edges(_BIN_EDGES.value)
    except evaluation.EvaluationError as error:
        raise app.UsageError(str(error)) from error

    methods, config = baselines, None
    if _WORKDIR.value or _CHECKPOINT.value:
        model = _load_model(_WORKDIR.value or _CHECKPOINT.value)
        config = model.training_config
        methods = [evaluation.model_method(model)]
        if _POSTPROCESS.value:
            methods.append(evaluation.model_method(model, postprocess=True))
        if isinstance(model, two_stage.TwoStageModel):
            methods.append(evaluation.coarse_method(model))
        methods += baselines
    images, mask_set = _images(config), _mask_set(config)
    sizes = sizes or (_from_config(config, "data.crop_size", "size"),)
    output = _OUTPUT.value or evaluation.default_output_dir(_WORKDIR.value)
    output = evaluation.prepare_output_dir(output)

    result = evaluation.evaluate(
        methods,
        images,
        mask_set,
        sizes=sizes,
        fit=_FIT.value,
        bin_edges=bin_edges,
        num_samples=_NUM_SAMPLES.value,
    )
    print(evaluation.format_table(result))
    for path in evaluation.write_results(result, output):
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)

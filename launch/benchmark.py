"""Measures speed and memory: `python -m launch.benchmark {inference,train,data,nps} [flags]`.

  python -m launch.benchmark inference --sizes=512,1024 --compare-torch
  python -m launch.benchmark train --size=256 --batch=4 --compare-torch
  python -m launch.benchmark data --workers=0,2
  python -m launch.benchmark nps --runs=1 --warmup=1

inference: completion latency per image size (batch 1) of each --models
  generator at paper size, randomly initialised (or the --workdir
  checkpoint's), as the GLCIC paper's timing table; also dfnet, and
  two_stage (the refinement network alone on its 20-channel input, the
  full-resolution stage of two-stage inpainting).
train: images/second per device of each training phase (GLCIC: completion,
  discriminator, joint; PGGAN: joint) at --size and at each model's runlocal
  size, with synthetic batches and with the real input pipeline on the
  offline sample_photos dataset.
data: input-pipeline throughput with the GLCIC preprocessing.
nps: seconds per image of neural patch synthesis (the paper's setting by
  default: scikit-image's 512 x 512 astronaut with a centred 256 x 256 hole,
  3 levels of 100 iterations), per level and in all, with the first image's
  compilation time apart; a random-weight full-size VGG-19 unless --vgg, a
  random-weight NPS content network (configs/nps_content.py) unless
  --content. Each image takes minutes on a CPU: use --runs=1 --warmup=1.

--compare-torch also runs GLCIC's completion network in PyTorch (the test
extra; inpaint_jax/benchmarking/torch_glcic.py) with the same weights on the
same input, in this process, and prints the JAX/PyTorch time ratio.
--compute_dtype=float32|bfloat16 sets the networks' arithmetic (default: the
config's "auto", bfloat16 on GPU/TPU, float32 on CPU) to compare the two on
an accelerator; the PyTorch reference stays float32.
Every subcommand prints a table and writes its results as JSON (--output).
"""

import importlib
import os
import tempfile

from absl import app, flags

from inpaint_jax import inference, models, nps, trainers
from inpaint_jax.benchmarking import configs, measure, reference, tables
from inpaint_jax.benchmarking import data as data_benchmark
from inpaint_jax.benchmarking import inference as inference_benchmark
from inpaint_jax.benchmarking import nps as nps_benchmark
from inpaint_jax.benchmarking import train as train_benchmark
from inpaint_jax.models.layers import InputShapeError
from inpaint_jax.weights import vgg as vgg_weights

SUBCOMMANDS = ("inference", "train", "data", "nps")
# Configs (configs/<name>.py) of the fully convolutional generators timed per image size;
# two_stage is the refinement network alone, on the 20-channel input.
INFERENCE_CONFIGS = ("glcic", "pggan", "dfnet", "two_stage")
# Configs of the recipes whose phase steps are timed.
TRAIN_CONFIGS = ("glcic", "pggan")

_MODELS = flags.DEFINE_list(
    "models", ["glcic", "pggan"], "Recipes (configs/<name>.py); inference: "
    f"{', '.join(INFERENCE_CONFIGS)}; train: {', '.join(TRAIN_CONFIGS)} (or any recipe).")
_SIZES = flags.DEFINE_list("sizes", ["512", "768", "1024", "2048"], "inference: image sides.")
_SIZE = flags.DEFINE_integer("size", 256, "train, data: crop side.", lower_bound=1)
_RUNLOCAL = flags.DEFINE_bool("runlocal", True, "train: also time each model's runlocal config.")
_BATCH = flags.DEFINE_integer("batch", 4, "train, data: images per device per step.", lower_bound=1)
_RUNS = flags.DEFINE_integer("runs", 5, "Timed calls (inference), steps (train) or batches (data).")
_WARMUP = flags.DEFINE_integer(
    "warmup", 2, "Untimed calls first (>= 1; the first measures memory)."
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "inference: time this training run's checkpoint (instead of --models)."
)
_WIDTH = flags.DEFINE_float(
    "width_multiplier", None, "Override every network's channel multiplier."
)
_DTYPE = flags.DEFINE_enum(
    "compute_dtype", None, models.COMPUTE_DTYPES,
    "inference, train: the networks' compute dtype (default: each config's, auto = bfloat16 "
    "on GPU/TPU, float32 on CPU); parameters stay float32.",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Where sample_photos is (or gets) built; default: a temporary folder."
)
_DATA_MODES = flags.DEFINE_list(
    "data_modes", list(train_benchmark.DATA_MODES), "train: synthetic and/or pipeline batches."
)
_PHASES = flags.DEFINE_list("phases", [], "train: phases to time (default: each model's all).")
_WORKERS = flags.DEFINE_list("workers", ["0"], "data: grain worker-process counts to compare.")
_COMPARE_TORCH = flags.DEFINE_bool(
    "compare-torch", False, "Also time GLCIC's completion network in PyTorch."
)
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", None, "PyTorch threads (default: every core)."
)
_VGG = flags.DEFINE_string(
    "vgg", None, "nps: VGG-19 weights (.pth, .h5 or .npz); default: random weights."
)
_CONTENT = flags.DEFINE_string(
    "content", None, "nps: content model workdir; default: a random-weight NPS content network."
)
_NPS_SIZE = flags.DEFINE_integer("nps_size", 512, "nps: image side (the hole's is half).")
_NPS_ITERATIONS = flags.DEFINE_integer(
    "nps_iterations", nps.NPSSettings().iterations, "nps: optimiser steps per level.", lower_bound=0
)
_NPS_SCALES = flags.DEFINE_integer(
    "nps_scales", nps.NPSSettings().num_scales, "nps: pyramid levels.", lower_bound=1
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "JSON results file (default: benchmark_<subcommand>.json)."
)


def _integers(values, flag: str) -> list[int]:
    try:
        return [int(value) for value in values]
    except ValueError:
        raise app.UsageError(
            f"--{flag} takes integers separated by commas, got {','.join(values)}"
        ) from None


def _config(model: str, variant: str | None = None):
    try:
        module = importlib.import_module(f"configs.{model}")
    except ModuleNotFoundError:
        raise app.UsageError(f"--models: no configs/{model}.py; choose from "
                             f"{', '.join(INFERENCE_CONFIGS)}") from None
    return module.get_config(variant)


def _torch_reference():
    """The PyTorch reference on --torch_threads threads (a usage error without torch)."""
    try:
        return reference.torch_reference(_TORCH_THREADS.value)
    except ImportError as error:
        raise app.UsageError(f"--compare-torch: {error}") from error


def _inference(torch_reference):
    if _WORKDIR.value:
        generators = [
            inference_benchmark.checkpoint_generator(_WORKDIR.value, compute_dtype=_DTYPE.value)
        ]
    else:
        generators = [
            inference_benchmark.random_generator(
                configs.benchmark_config(
                    _config(model), width_multiplier=_WIDTH.value, compute_dtype=_DTYPE.value
                ).model
            )
            for model in _MODELS.value
        ]
    sizes = _integers(_SIZES.value, "sizes")
    results = inference_benchmark.benchmark_inference(
        generators, sizes, runs=_RUNS.value, warmup=_WARMUP.value, reference=torch_reference
    )
    settings = {
        "models": [g.name for g in generators],
        "sizes": sizes,
        "workdir": _WORKDIR.value,
        "compute_dtype": _DTYPE.value,
    }
    return results, settings, tables.format_inference_table


def _train_case(label: str, config) -> train_benchmark.TrainCase:
    phases = tuple(_PHASES.value) or None
    return train_benchmark.TrainCase(label, config, trainers.recipe_module(config.trainer).build,
                                     phases)


def _train(torch_reference, data_dir):
    settings = {
        "batch_per_device": _BATCH.value,
        "width_multiplier": _WIDTH.value,
        "data_dir": data_dir,
        "compute_dtype": _DTYPE.value,
    }
    cases = []
    for model in _MODELS.value:
        config = configs.benchmark_config(_config(model), size=_SIZE.value, **settings)
        cases.append(_train_case(model, config))
        if _RUNLOCAL.value:
            config = configs.benchmark_config(_config(model, "runlocal"), **settings)
            cases.append(_train_case(f"{model}:runlocal", config))
    results = train_benchmark.benchmark_train(
        cases,
        steps=_RUNS.value,
        warmup=_WARMUP.value,
        data_modes=_DATA_MODES.value,
        reference=torch_reference,
    )
    settings.update(
        models=_MODELS.value,
        size=_SIZE.value,
        steps=_RUNS.value,
        phases=_PHASES.value,
        data_modes=_DATA_MODES.value,
    )
    return results, settings, tables.format_train_table


def _data(data_dir):
    config = configs.benchmark_config(
        _config("glcic"), size=_SIZE.value, batch_per_device=_BATCH.value, data_dir=data_dir
    )
    workers = _integers(_WORKERS.value, "workers")
    results = data_benchmark.benchmark_data(
        config, worker_counts=workers, batches=_RUNS.value, warmup=_WARMUP.value
    )
    return (
        results,
        {"size": _SIZE.value, "batch_per_device": _BATCH.value, "workers": workers},
        tables.format_data_table,
    )


def _nps():
    if _VGG.value:
        texture_net, vgg_variables = vgg_weights.load_vgg(_VGG.value, depth=19,
                                                          config_flag="--vgg")
    else:
        texture_net, vgg_variables = nps_benchmark.random_vgg19()
    if _CONTENT.value:
        content = inference.load_model(_CONTENT.value)
    else:
        config = configs.benchmark_config(_config("nps_content"), width_multiplier=_WIDTH.value)
        content = nps_benchmark.random_content_model(config)
    nps_settings = nps.NPSSettings(num_scales=_NPS_SCALES.value, iterations=_NPS_ITERATIONS.value)
    model = nps.NeuralPatchSynthesis(content, texture_net, vgg_variables, nps_settings)
    results = nps_benchmark.benchmark_nps(
        model, _NPS_SIZE.value, runs=_RUNS.value, warmup=_WARMUP.value
    )
    settings = {
        "size": _NPS_SIZE.value,
        "vgg": _VGG.value,
        "content": _CONTENT.value,
        "width_multiplier": _WIDTH.value,
    }
    return results, settings, tables.format_nps_table


# Errors a user causes with the flags (weights, workdirs, NPS settings), reported as usage errors.
_FLAG_ERRORS = (
    vgg_weights.MissingWeightsError,
    vgg_weights.VGGWeightsError,
    inference.ModelLoadError,
    FileNotFoundError,  # no such --workdir / --content, or no checkpoint in it
    nps.NPSSettingsError,
)


def main(argv):
    """Runs the benchmark subcommand named in argv and writes its JSON."""
    if len(argv) != 2 or argv[1] not in SUBCOMMANDS:
        raise app.UsageError(f"give one subcommand: {', '.join(SUBCOMMANDS)} (got {argv[1:]})")
    subcommand = argv[1]
    if _COMPARE_TORCH.value and subcommand in ("data", "nps"):
        raise app.UsageError(f"--compare-torch applies to inference and train, not {subcommand}")
    torch_reference = _torch_reference() if _COMPARE_TORCH.value else None
    started = measure.environment()
    try:
        measure.check_counts(runs=_RUNS.value, warmup=_WARMUP.value)
        with tempfile.TemporaryDirectory(prefix="benchmark_data_") as temporary:
            data_dir = _DATA_DIR.value or temporary
            if subcommand == "inference":
                results, settings, format_table = _inference(torch_reference)
            elif subcommand == "train":
                results, settings, format_table = _train(torch_reference, data_dir)
            elif subcommand == "data":
                results, settings, format_table = _data(data_dir)
            else:
                results, settings, format_table = _nps()
    except (measure.BenchmarkError, trainers.UnknownRecipeError, InputShapeError,
            *_FLAG_ERRORS) as error:
        raise app.UsageError(str(error)) from error
    settings.update(runs=_RUNS.value, warmup=_WARMUP.value, compare_torch=_COMPARE_TORCH.value)
    report = tables.build_report(subcommand, settings, results, started)
    print(format_table(report))
    path = tables.write_report(report, _OUTPUT.value or f"benchmark_{subcommand}.json")
    print(f"wrote {os.fspath(path)}")


if __name__ == "__main__":
    app.run(main)

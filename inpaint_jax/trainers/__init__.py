"""Training recipes, one module each, with the plain-function modules they share.

Each recipe module (glcic, pggan, context_encoder, dfnet, two_stage) exposes
`train_and_evaluate(config, workdir)`, which reads as the story of a run,
and `build(config, mesh)`, the `loop.Training` it runs (also what
`launch.benchmark train` times). Shared: `state` (the train-state pytree),
`optimizers`, `phases` (schedules), `gan` and `supervised` (phase steps),
`loop` (the training loop), `evaluator` (periodic evaluation). Nothing
outside this package but `launch/train.py` and `launch/benchmark.py` (the
training benchmark) imports it.
"""

import importlib
import types

RECIPES = ("glcic", "pggan", "context_encoder", "dfnet", "two_stage")


class UnknownRecipeError(ValueError):
    """A config names a trainer that is not one of RECIPES."""


def recipe_module(name: str) -> types.ModuleType:
    """The recipe module `name` (a config's `trainer` field)."""
    if name not in RECIPES:
        raise UnknownRecipeError(
            f"config.trainer={name!r} is not a recipe of inpaint_jax.trainers; choose one of "
            f"{', '.join(RECIPES)}."
        )
    return importlib.import_module(f"{__name__}.{name}")

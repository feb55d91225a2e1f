"""Network definitions, one module per family, and the registry that builds them.

Everything outside this package makes a network through `models.build(model_config)`
and initialises it with `models.example_inputs(...)` (see `registry.py`).
"""

from inpaint_jax.models.registry import (
    COMPUTE_DTYPES,
    FAMILIES,
    ExampleInputs,
    ModelConfigError,
    Networks,
    as_model_config,
    build,
    compute_dtype,
    example_inputs,
    family,
)

__all__ = [
    "COMPUTE_DTYPES",
    "FAMILIES",
    "ExampleInputs",
    "ModelConfigError",
    "Networks",
    "as_model_config",
    "build",
    "compute_dtype",
    "example_inputs",
    "family",
]

"""Fixtures for in-process runs of the `launch.*` commands.

Every command defines its flags on absl's global `flags.FLAGS` when it is
imported, and several define the same names (--workdir, --output, ...), so
two of them cannot be imported into one process side by side: absl refuses
the second definition. `launch_command(name)` imports `launch.<name>` anew
with the flags of every other `launch.*` module set aside, and puts them
(and the module that was imported before, if any) back afterwards. So test
modules never import a command at collection time; they take it from a
module-scoped fixture built on this.
"""

from __future__ import annotations

import contextlib
import importlib
import sys

import pytest
from absl import flags


def _launch_flags() -> list[tuple[str, flags.Flag]]:
    """(module name, flag) of every flag a `launch.*` module defined."""
    return [(module, flag) for module, module_flags in flags.FLAGS.flags_by_module_dict().items()
            if module.startswith("launch.") for flag in module_flags]


def _remove(entries) -> None:
    for _, flag in entries:
        if flag.name in flags.FLAGS and flags.FLAGS[flag.name] is flag:
            delattr(flags.FLAGS, flag.name)


@contextlib.contextmanager
def launch_command(name: str):
    """`launch.<name>`, freshly imported with its own flags; everything is put back on exit."""
    import launch  # noqa: PLC0415

    full_name = f"launch.{name}"
    if flags.FLAGS.is_parsed():
        flags.FLAGS.unparse_flags()
    set_aside = _launch_flags()
    _remove(set_aside)
    previous_module = sys.modules.pop(full_name, None)
    try:
        module = importlib.import_module(full_name)
        yield module
    finally:
        if flags.FLAGS.is_parsed():
            flags.FLAGS.unparse_flags()
        _remove(_launch_flags())
        sys.modules.pop(full_name, None)
        if previous_module is not None:
            sys.modules[full_name] = previous_module
            setattr(launch, name, previous_module)
        elif hasattr(launch, name):
            delattr(launch, name)
        for module_name, flag in set_aside:
            flags.FLAGS[flag.name] = flag
            flags.FLAGS.register_flag_by_module(module_name, flag)


@pytest.fixture
def parsed_flags():
    """parse(program, *arguments): parses a command line for an in-process `main`; reset after.

    Returns the arguments absl leaves over (the program name and positional
    arguments), which is what `main` receives.
    """
    def parse(program, *arguments):
        return flags.FLAGS([program, *arguments])

    yield parse
    flags.FLAGS.unparse_flags()

"""Training schedules: which phase each step belongs to.

A recipe trains in one or more phases run one after the other (GLCIC:
"completion", "discriminator", "joint"); each phase is one jitted step
function, chosen on the host by step number. A `Schedule` holds the phases'
names and lengths; the recipe's step functions are a mapping from the same
names, and `loop.run` looks the current one up there.
"""

from __future__ import annotations

import dataclasses

# The phases of the adversarial recipes (their step functions: gan.phase_steps).
COMPLETION, DISCRIMINATOR, JOINT = "completion", "discriminator", "joint"
# The one phase of recipes trained without a discriminator (supervised.phase_steps).
TRAIN = "train"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Phases in order with the number of steps each runs within `total_steps`.

    Phases of length 0 do not run, so a recipe without a warm-up has just its
    main phase.
    """

    lengths: tuple[tuple[str, int], ...]

    @property
    def phases(self) -> tuple[str, ...]:
        """The names of the phases that run, in order."""
        return tuple(name for name, length in self.lengths if length > 0)

    def phase(self, step: int) -> str:
        """The phase that 0-based step `step` belongs to (steps past the end: the last phase)."""
        end = 0
        for name, length in self.lengths:
            end += length
            if step < end:
                return name
        return self.phases[-1]


def schedule(total_steps: int, *leading: tuple[str, int], then: str) -> Schedule:
    """The `leading` phases `(name, steps)` in order, then phase `then` until `total_steps`.

    Example, GLCIC: `schedule(500_000, ("completion", 90_000), ("discriminator",
    10_000), then="joint")`. Leading phases are cut where `total_steps` ends
    (a run may stop before its last phase); a negative length or
    `total_steps` < 1 is a ValueError.
    """
    if total_steps < 1 or any(length < 0 for _, length in leading):
        raise ValueError(
            f"total_steps must be >= 1 and phase lengths >= 0; got total_steps={total_steps}, "
            + ", ".join(f"{name}={length}" for name, length in leading)
        )
    lengths, left = [], total_steps
    for name, length in leading:
        lengths.append((name, min(length, left)))
        left -= lengths[-1][1]
    return Schedule((*lengths, (then, left)))

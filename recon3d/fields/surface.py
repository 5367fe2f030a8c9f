"""What a field's surface is, told to the mesher by the field itself (instant-nsr-pl's isosurface
contract): the function to sample, its level, the inside side, and how a user's ``--level`` maps to
field values. The mesher never asks which kind of field it holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from recon3d.errors import Recon3dError

#: (N, 3) points in the field's coordinates → (N,) values.
FieldFn = Callable[[torch.Tensor], torch.Tensor]
#: (N, 3) points → (N, 3) colours in [0, 1].
ColorFn = Callable[[torch.Tensor], torch.Tensor]

INSIDE_SIDES = ("below", "above")


@dataclass(frozen=True)
class Surface:
    """The closed surface ``function(x) = level`` with the object on the ``inside`` side.

    ``inside="below"``: the object is where f < level (signed distances); ``"above"``: where
    f > level (occupancy logits, densities). ``shown_level`` is the level as the user names it (a
    probability τ for occupancy fields, whose values are logits). ``lipschitz`` bounds |∇f| (1 for
    a signed distance), which makes coarse-to-fine culling exact. ``colors`` gives vertex colours
    when the field has them, at ``color_cost`` field evaluations per point.
    """

    function: FieldFn
    level: float = 0.0
    inside: str = "below"
    shown_level: float | None = None
    lipschitz: float | None = None
    colors: ColorFn | None = None
    color_cost: int = 1
    #: Field values as the user names levels (occupancy: logit → probability); None: as they are.
    to_user: Callable[[float], float] | None = None

    def __post_init__(self) -> None:
        if self.inside not in INSIDE_SIDES:
            raise Recon3dError(f"inside must be one of {list(INSIDE_SIDES)}, got {self.inside!r}")

    @property
    def user_level(self) -> float:
        """The level as the user names it."""
        return self.level if self.shown_level is None else self.shown_level

    def user_value(self, value: float) -> float:
        """A field value as the user names levels (for messages about the field's range)."""
        return value if self.to_user is None else self.to_user(value)

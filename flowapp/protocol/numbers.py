"""Numbers as the wire protocol means them: finite, and never a JSON `true`/`false` standing in for 1/0.

Python's JSON reads `1e999` as infinity and pydantic's lax mode reads `false` as 0; both would pass
validation and fail later, far from the sender (a reply that cannot be serialized, a timer that never fires).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


def _refuse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


NotBool = BeforeValidator(_refuse_bool)
"""Last in a number field's Annotated (after its Field, which keeps the bounds in the JSON schema)."""

Int = Annotated[int, NotBool]
"""An integer field: JSON integers (and numeric strings, as lax as ever), never true/false."""


def non_finite_path(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where in a JSON value (dicts and lists) a NaN or infinity sits, or None if it holds none."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = non_finite_path(item, (*path, key))
        if found is not None:
            return found
    return None


class WireModel(BaseModel):
    """Base of every model that takes numbers from the wire or from an app: NaN and infinities are refused."""

    model_config = ConfigDict(allow_inf_nan=False)

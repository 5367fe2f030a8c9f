"""What a checkpoint holds, for ``recon3d info``: the keys every checkpoint has, plus the records
its method declares (recon3d.fit.method.Method.records)."""

from __future__ import annotations

import math
from typing import Any

from recon3d.fields import FIELDS
from recon3d.fit.registry import method_of


def describe_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A flat, human-readable summary of what a checkpoint holds (for ``recon3d info``)."""
    train = checkpoint["train"]
    field = checkpoint["field"]
    method = method_of(checkpoint)
    n_params = sum(int(t.numel()) for t in checkpoint["state_dict"].values() if hasattr(t, "numel"))
    scale = float(checkpoint["to_world"]["scale"])
    translation = [float(t) for t in checkpoint["to_world"]["translation"]]
    bounds = [[float(v) * scale + translation[i] for i, v in enumerate(row)] for row in checkpoint["bounds"]]
    history = train.get("history") or []
    return {
        "kind": checkpoint["kind"],
        "format_version": checkpoint["version"],
        "level": float(checkpoint["level"]),
        "inside": checkpoint.get("inside", field.get("inside")),
        **_field_summary(checkpoint["kind"], field),
        "parameters": n_params,
        "to_world_scale": scale,
        "to_world_translation": translation,
        "bounds_world": bounds,
        "steps": train.get("steps"),
        "seconds": train.get("seconds"),
        "complete": train.get("complete", True),
        "resumable": "resume" in checkpoint,
        "support_points": int(len(checkpoint["support"]["points"])) if "support" in checkpoint else None,
        "first_loss": history[0][1] if history else None,
        "final_loss": history[-1][1] if history else None,
        **_lowest(history),
        **{key: train[key] for key in (method.records if method is not None else ()) if key in train},
        "device": train.get("device"),
        "versions": train.get("versions"),
    }


def _lowest(history: list) -> dict[str, Any]:
    """The lowest finite loss of the history and its step (both None without one)."""
    finite = [row for row in history if len(row) > 1 and row[1] == row[1]]  # NaN never equals itself
    if not finite:
        return {"min_loss": None, "min_loss_step": None}
    row = min(finite, key=lambda r: r[1])
    return {"min_loss": row[1], "min_loss_step": int(row[0]) if math.isfinite(row[0]) else None}


def _field_summary(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """``encoding`` and ``mlp`` as the field class describes its config ("-" for an unknown kind)."""
    cls = FIELDS.get(kind)
    return cls.summary(config) if cls is not None else {"encoding": None, "mlp": "-"}

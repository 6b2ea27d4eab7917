"""A role line per head, from its measurements alone (never from its index).

Thresholds are reading conventions fixed here before any run, not fitted to a ground truth: a patch
that moves the metric by under NO_EFFECT of its clean value, with a direct effect under DIRECT of it, is
"no measurable role"; a direct effect of at least DIRECT of the clean metric counts as writing the answer
(or against it); a share of at least ATTENDS on one named position names what the head moves."""

from __future__ import annotations

from typing import Any

NO_EFFECT = 0.05  # |patch drop| / clean metric below which patching "does nothing"
DIRECT = 0.10  # |direct effect| / clean metric from which the head writes the metric directly
ATTENDS = 0.30  # attention share from which a head is said to attend one position


def top_position(attention: dict[str, float]) -> tuple[str, float]:
    """The named position (BOS and "other" aside, END included) with the largest share."""
    named = {k: v for k, v in attention.items() if k not in ("BOS", "other")}
    if not named:
        return "other", attention.get("other", 0.0)
    name = max(named, key=lambda k: named[k])
    return name, named[name]


def role_line(attention: dict[str, float], direct: float, drop: float, clean: float,
              target: str) -> dict[str, Any]:
    """(kind, line) from a head's mean attention shares, direct effect, patch drop and the clean metric."""
    scale = abs(clean) if clean else 1.0
    where, share = top_position(attention)
    looks = (f"attends {where} {share:.0%}" if share >= ATTENDS
             else f"attends diffusely (most: {where} {share:.0%})")
    if attention.get("BOS", 0.0) >= ATTENDS:
        looks += f", BOS {attention['BOS']:.0%}"
    sign = "raises" if direct >= 0 else "lowers"
    effect = f"{sign} {target} by {abs(direct):.2g}"
    patch = (f"patching it removes {drop / scale:.0%} of the metric" if drop >= 0
             else f"patching it raises the metric by {-drop / scale:.0%}")
    if abs(drop) < NO_EFFECT * scale and abs(direct) < DIRECT * scale:
        kind, what = "none", "no measurable role on this task"
    elif direct >= DIRECT * scale:
        kind = "mover"
        what = f"moves the {where} token" if share >= ATTENDS else "writes toward the answer directly"
    elif direct <= -DIRECT * scale:
        kind = "negative mover"
        what = f"writes against the {where} token" if share >= ATTENDS else "writes against the answer"
    else:
        kind = "indirect"
        what = f"acts through later components, reading {where}" if share >= ATTENDS else \
            "acts through later components"
    return {"kind": kind, "line": f"{what}: {looks}, {effect}, {patch}"}

"""A role line per head, from its measurements alone (never from its index).

Thresholds are reading conventions fixed here before any run, not fitted to a ground truth: a patch
that moves the metric by under NO_EFFECT of its clean value, with a direct effect under DIRECT of it, is
"no measurable role"; a direct effect of at least DIRECT of the clean metric counts as writing the metric
directly; a share of at least ATTENDS on one named position names what the head reads. Whether a direct
effect raises the answer or lowers the wrong answer (each logit against the mean logit) says whether the
head moves the answer or suppresses the wrong one."""

from __future__ import annotations

from typing import Any

NO_EFFECT = 0.05  # |patch drop| / clean metric below which patching "does nothing"
DIRECT = 0.10  # |direct effect| / clean metric from which the head writes the metric directly
ATTENDS = 0.30  # attention share from which a head is said to attend one position
KINDS = ("mover", "suppressor", "negative mover", "wrong mover", "indirect", "none")


def top_position(attention: dict[str, float]) -> tuple[str, float]:
    """The named position (BOS and "other" aside, END included) with the largest share."""
    named = {k: v for k, v in attention.items() if k not in ("BOS", "other")}
    if not named:
        return "other", attention.get("other", 0.0)
    name = max(named, key=lambda k: named[k])
    return name, named[name]


def role_line(attention: dict[str, float], direct: float, on_answer: float, on_wrong: float, drop: float,
              clean: float, target: str, holds: dict[str, str | None]) -> dict[str, Any]:
    """{kind, line} from a head's mean attention shares, direct effect on the metric (and on the answer's
    and the wrong answer's logits), patch drop and the clean metric. holds: named position -> "answer" /
    "wrong" when that position holds the answer / the wrong answer token in most prompts."""
    scale = abs(clean) if clean else 1.0
    where, share = top_position(attention)
    reads = share >= ATTENDS
    holding = holds.get(where) if reads else None
    looks = f"attends {where} {share:.0%}" if reads else f"attends diffusely (most: {where} {share:.0%})"
    if attention.get("BOS", 0.0) >= ATTENDS:
        looks += f", BOS {attention['BOS']:.0%}"
    effect = f"{'raises' if direct >= 0 else 'lowers'} {target} by {abs(direct):.2g}"
    patch = (f"patching it removes {drop / scale:.0%} of the metric" if drop >= 0
             else f"patching it raises the metric by {-drop / scale:.0%}")
    reading = f", reading {where}" if reads else ""
    if abs(drop) < NO_EFFECT * scale and abs(direct) < DIRECT * scale:
        kind, what = "none", "no measurable role on this task"
    elif direct >= DIRECT * scale and on_answer >= -on_wrong:
        kind = "mover"
        what = (f"moves the {where} token (the answer)" if holding == "answer"
                else f"writes the answer{reading}")
    elif direct >= DIRECT * scale:
        kind = "suppressor"
        what = (f"suppresses the {where} token (the wrong answer)" if holding == "wrong"
                else f"suppresses the wrong answer{reading}")
    elif direct <= -DIRECT * scale and -on_answer >= on_wrong:
        kind = "negative mover"
        what = (f"writes against the {where} token (the answer)" if holding == "answer"
                else f"writes against the answer{reading}")
    elif direct <= -DIRECT * scale:
        kind = "wrong mover"
        what = (f"moves the {where} token (the wrong answer)" if holding == "wrong"
                else f"writes the wrong answer{reading}")
    else:
        kind, what = "indirect", f"acts through later components{reading}"
    parts = f"answer {on_answer:+.2g}, wrong {on_wrong:+.2g}"
    return {"kind": kind, "line": f"{what}: {looks}, {effect} ({parts}), {patch}"}

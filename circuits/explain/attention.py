"""Where a head looks from the answer position: its attention share on each named position, and the
prompts' text with the position it attends most marked."""

from __future__ import annotations

import torch

from circuits.tokenizer import Tokenizer

MARK = ("[[", "]]")  # around the attended token in an example prompt


def position_table(named: dict[str, torch.Tensor], n: int, seq: int) -> dict[str, torch.Tensor]:
    """The task's named positions ([n] each) plus BOS (0) and END (the answer position, seq - 1)."""
    return {"BOS": torch.zeros(n, dtype=torch.long), **named, "END": torch.full((n,), seq - 1)}


def shares(attention: torch.Tensor, positions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """attention: [n, c, seq] -> name -> [n, c] the share on that position, and "other": the share on every
    position no name covers."""
    out = {name: attention.gather(2, pos[:, None, None].expand(-1, attention.shape[1], 1))[..., 0]
           for name, pos in positions.items()}
    covered = torch.zeros(attention.shape[0], attention.shape[2], dtype=torch.bool)  # [n, seq]
    for pos in positions.values():
        covered[torch.arange(attention.shape[0]), pos] = True
    out["other"] = (attention * ~covered[:, None, :]).sum(-1)
    return out


def marked_text(tokenizer: Tokenizer, tokens: list[int], position: int) -> str:
    """The prompt's text (BOS left out) with the token at `position` between MARK."""
    pieces = [tokenizer.decode([t]) for t in tokens]
    pieces[0] = f"{MARK[0]}BOS{MARK[1]}" if position == 0 else ""
    if position:
        pieces[position] = f"{MARK[0]}{pieces[position]}{MARK[1]}"
    return "".join(pieces)

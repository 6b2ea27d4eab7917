"""explain_circuit: codes, attention, direct effect and a causal check for every head of a circuit."""

from __future__ import annotations

import time
from typing import Any

import torch

from circuits.discovery.config import FindConfig
from circuits.discovery.pipeline import split_prompts
from circuits.errors import CircuitsError
from circuits.explain.attention import marked_text, position_table, shares
from circuits.explain.causal import patch_drops
from circuits.explain.codes import HeadCodes, own_codes, own_sae_config, run_codes
from circuits.explain.config import ExplainConfig
from circuits.explain.direct import TARGET, answer_directions, direct_effects, is_exact
from circuits.explain.passes import trace
from circuits.explain.roles import role_line, top_position
from circuits.models.loaded import LoadedModel
from circuits.progress import Progress
from tasks.base import Head, PromptSet, Task, named_positions


def explain_circuit(task: Task, loaded: LoadedModel, circuit: list[Head], seed: int = 0, n_train: int = 10,
                    run_config: FindConfig | None = None, config: ExplainConfig | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """The `explain` JSON block for `circuit` (heads in the model). run_config: the discrete-SAE run's
    configuration, whose SAE then gives the codes (else each head gets its own SAE)."""
    config = config or ExplainConfig()
    config.validate()
    heads = sorted(circuit)
    if not heads:
        raise CircuitsError("the circuit is empty: nothing to explain")
    L, H = loaded.n_layers, loaded.n_heads
    bad = [h for h in heads if not (0 <= h[0] < L and 0 <= h[1] < H)]
    if bad:
        raise CircuitsError(f"head {bad[0]} of the circuit does not exist in {loaded.name} ({L}x{H} heads)")
    model, timings = loaded.model, {}
    start = t0 = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t0
        timings[stage] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if progress:
            progress(stage, 1, 1)

    all_prompts = task.prompts(loaded.tokenizer, n_train + config.n_prompts, seed)
    train_tokens, prompts = split_prompts(all_prompts, n_train)  # prompts: the run's first scoring ones
    n = len(prompts)
    tr = trace(model, task, prompts, heads, config.batch_size)
    lap("passes")
    reuse = run_config is not None and run_config.signal == "output" and run_config.position != "each"
    if reuse:
        assert run_config is not None
        codes = run_codes(model, run_config, train_tokens,
                          torch.cat([prompts.positive, prompts.negative]), heads)
    else:
        codes = own_codes(torch.cat([tr.writes_pos, tr.writes_neg]),
                          own_sae_config(seed, config.steps, config.d_sae))
    if run_config is not None and not reuse:
        codes.source["why_not_the_run_s"] = (f"the run's SAE encodes signal {run_config.signal}, position "
                                              f"{run_config.position}: not one output per prompt")
    lap("codes")
    clean, drops = patch_drops(model, task, prompts, heads)  # [n], [c, n]
    lap("patching")

    positions = position_table(named_positions(task, prompts), n, prompts.seq_len)
    share = shares(tr.attention, positions)  # name -> [n, c]
    to_answer, to_wrong = answer_directions(model, prompts)  # [n, d_model] each
    on_answer = direct_effects(model, tr.writes_pos, to_answer, tr.final_scale)  # [n, c]
    on_wrong = direct_effects(model, tr.writes_pos, to_wrong, tr.final_scale)  # [n, c]
    head_direct = on_answer - on_wrong  # [n, c]
    code_direct = direct_effects(model, codes.contributions[:n], to_answer - to_wrong, tr.final_scale)
    holds = holders(prompts, positions)
    attended = tr.attention.argmax(-1)  # [n, c]
    clean_mean = float(clean.mean())
    out_heads = []
    for j, head in enumerate(heads):
        attention = {k: float(v[:, j].mean()) for k, v in share.items()}
        direct, drop = float(head_direct[:, j].mean()), float(drops[j].mean())
        up, down = float(on_answer[:, j].mean()), float(on_wrong[:, j].mean())
        entry: dict[str, Any] = {
            "head": list(head), "attention": attention, "direct_effect": direct, "direct_on_answer": up,
            "direct_on_wrong": down, "patch_drop": drop,
            "patch_drop_fraction": drop / clean_mean if clean_mean else None,
            "role": role_line(attention, direct, up, down, drop, clean_mean, TARGET, holds),
            "codes": _codes_of(j, codes, n, share, code_direct, drops, clean, attended, prompts.positive,
                               loaded, config),
        }
        entry["n_codes_on_positives"] = int(codes.codes[:n, j].unique().numel())
        entry["positive_unique_codes"] = positive_unique(codes.codes[:n, j], codes.codes[n:, j],
                                                         codes.n_codes)
        out_heads.append(entry)
    lap("summaries")
    timings["total"] = time.perf_counter() - start
    return {
        "n_prompts": n, "seed": seed, "n_train_skipped": n_train, "clean_metric": clean_mean,
        "positions": list(positions) + ["other"], "position_holds": holds, "codes_from": codes.source,
        "direct_effect": {"of": TARGET, "parts": "direct_on_answer / direct_on_wrong: each logit against the "
                                                 "mean logit; their difference is the direct effect",
                          "exact": is_exact(model),
                          "note": "final norm's scale frozen per prompt" + (
                              "" if is_exact(model) else "; approximate: a norm after attention (or a logit "
                                                         "soft cap) makes the reading non-linear")},
        "causal_check": "on the positives, the head's output (z, every position) replaced by its output on "
                        "the prompt's own negative; drop = clean metric - patched metric",
        "heads": out_heads, "timings": timings,
        "seconds_per_head": timings["total"] / len(heads),
    }


def positive_unique(pos: torch.Tensor, neg: torch.Tensor, n_codes: int) -> list[dict[str, Any]]:
    """pos, neg: [n] one head's codes -> every code seen on positives and never on negatives, with its
    count on the positives (most frequent first); the silent code is called "silent"."""
    counts_pos = torch.bincount(pos, minlength=n_codes)
    counts_neg = torch.bincount(neg, minlength=n_codes)
    only = ((counts_pos > 0) & (counts_neg == 0)).nonzero()[:, 0].tolist()
    return [{"code": c if c != n_codes - 1 else "silent", "n_positive": int(counts_pos[c])}
            for c in sorted(only, key=lambda c: -int(counts_pos[c]))]


def holders(prompts: PromptSet, positions: dict[str, torch.Tensor]) -> dict[str, str | None]:
    """Named position -> "answer" / "wrong" when it holds that token in most positive prompts, else None."""
    rows = torch.arange(len(prompts))
    out: dict[str, str | None] = {}
    for name, pos in positions.items():
        token = prompts.positive[rows, pos]  # [n]
        if (token == prompts.answer).float().mean() > 0.5:
            out[name] = "answer"
        elif (token == prompts.wrong[:, 0]).float().mean() > 0.5:
            out[name] = "wrong"
        else:
            out[name] = None
    return out


def _codes_of(j: int, codes: HeadCodes, n: int, share: dict[str, torch.Tensor], code_direct: torch.Tensor,
              drops: torch.Tensor, clean: torch.Tensor, attended: torch.Tensor, positives: torch.Tensor,
              loaded: LoadedModel, config: ExplainConfig) -> list[dict[str, Any]]:
    """Head j's codes on the positives, most frequent first (at most config.max_codes)."""
    pos_codes, neg_codes = codes.codes[:n, j], codes.codes[n:, j]  # [n] each
    counts_pos = torch.bincount(pos_codes, minlength=codes.n_codes)
    counts_neg = torch.bincount(neg_codes, minlength=codes.n_codes)
    order = [int(c) for c in torch.argsort(-counts_pos, stable=True) if counts_pos[c] > 0][:config.max_codes]
    silent = codes.n_codes - 1
    out = []
    for c in order:
        rows = (pos_codes == c).nonzero()[:, 0]  # positives carrying code c
        attention = {k: float(v[rows, j].mean()) for k, v in share.items()}
        where, where_share = top_position(attention)
        drop = float(drops[j, rows].mean())
        clean_c = float(clean[rows].mean())
        out.append({
            "code": c if c != silent else "silent", "n_positive": int(counts_pos[c]),
            "n_negative": int(counts_neg[c]), "positive_unique": bool(counts_neg[c] == 0),
            "attention": attention, "top_position": where, "top_share": where_share,
            "direct_effect": float(code_direct[rows, j].mean()),
            "patch": {"n": int(rows.numel()), "drop": drop,
                      "drop_fraction": drop / clean_c if clean_c else None},
            "examples": [marked_text(loaded.tokenizer, positives[int(r)].tolist(), int(attended[int(r), j]))
                         for r in rows[:config.examples]],
        })
    return out

"""The first-letter absorption pipeline of Chanin et al. (2024, arXiv 2409.14507), after sae-spelling.

1. Tokens: every vocabulary entry that is a plain word (optional leading space, letters only), labelled
   with its first letter; letters with fewer than `min_per_letter` tokens are dropped.
2. Activations: the hook's activation at the word, run as [BOS, word].
3. Probe: multinomial logistic regression activation -> first letter (train/test split); its weight row
   for letter L, normalised, is L's reference direction u_L.
4. Main latents of L (k-sparse probing): latents ranked by mean activation on L-tokens minus the rest; the
   top latent, then the next ones while each raises the F1 of a logistic-regression probe on the chosen
   latents by >= `f1_jump` (0.03, the feature-split criterion of sae-spelling / SAEBench).
5. False negatives: tokens of L that the probe classifies correctly but on which no main latent fires.
6. Absorbed: a false negative whose largest contribution along u_L, f_j (W_dec[j] . u_L), comes from a
   latent j that is not a main latent, has decoder cosine >= `min_cosine` with u_L (0.025 as in the
   paper), and is token-specific: it fires on at most `max_absorber_tokens` of the evaluated tokens.
   absorption rate of L = absorbed / probe-correct tokens of L.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from torch import Tensor

from circuits.analysis.matching import normalise_rows
from circuits.errors import CircuitsError
from circuits.progress import Progress
from circuits.sae import SAE
from circuits.sae.sources import check_hook, hook_activations
from circuits.stats import mean_std

WORD = re.compile(r"^ ?[A-Za-z]+$")


@dataclass
class LetterTokens:
    ids: Tensor  # [n] token ids
    strings: list[str]
    letters: list[str]  # lower-case first letter of each token

    def __len__(self) -> int:
        return len(self.strings)


def letter_tokens(tokenizer: Any, min_per_letter: int = 5, max_tokens: int | None = None) -> LetterTokens:
    """Word tokens of the tokenizer's vocabulary with their first letters (see module docstring)."""
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, list):  # WordTokenizer: id -> piece
        items = list(enumerate(vocab))
    else:
        items = [(i, tokenizer.decode([i])) for i in range(int(tokenizer.vocab_size))]
    bos = int(getattr(tokenizer, "bos_token_id", -1))
    words = [(i, s) for i, s in items if i != bos and WORD.match(s)]
    if max_tokens is not None:
        words = words[:max_tokens]
    counts: dict[str, int] = {}
    for _, s in words:
        counts[s.strip()[0].lower()] = counts.get(s.strip()[0].lower(), 0) + 1
    keep = [(i, s) for i, s in words if counts[s.strip()[0].lower()] >= min_per_letter]
    letters = {s.strip()[0].lower() for _, s in keep}
    if len(letters) < 2:
        raise CircuitsError(f"the vocabulary has fewer than 2 first letters with >= {min_per_letter} word "
                            f"tokens each; the first-letter pipeline needs a real word vocabulary")
    return LetterTokens(ids=torch.tensor([i for i, _ in keep]), strings=[s for _, s in keep],
                        letters=[s.strip()[0].lower() for _, s in keep])


@torch.no_grad()
def token_activations(model: Any, tokens: LetterTokens, hook: str, bos_token_id: int, batch_size: int = 512
                      ) -> Tensor:
    """The hook's activation at each word run as [BOS, word] -> [n, d]."""
    check_hook(model, hook)
    out = []
    for start in range(0, len(tokens), batch_size):
        ids = tokens.ids[start:start + batch_size]
        batch = torch.stack([torch.full_like(ids, bos_token_id), ids], dim=1)  # [b, 2]
        out.append(hook_activations(model, batch, hook)[:, -1])
    return torch.cat(out)


@dataclass
class LetterProbe:
    classes: list[str]
    directions: Tensor  # [n_classes, d] unit rows (the probe's weight rows)
    predictions: list[str]  # on every token
    train_accuracy: float
    test_accuracy: float


def fit_probe(acts: Tensor, letters: list[str], seed: int = 0, test_fraction: float = 0.2, c: float = 1.0
              ) -> LetterProbe:
    """Multinomial logistic regression from activations [n, d] to first letters."""
    x = acts.double().numpy()
    y = np.asarray(letters)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(x_tr, y_tr)
    coef = torch.as_tensor(clf.coef_)
    if coef.shape[0] == 1:  # binary: sklearn keeps one row, for the second class
        coef = torch.cat([-coef, coef])
    return LetterProbe(classes=[str(k) for k in clf.classes_], directions=normalise_rows(coef),
                       predictions=[str(p) for p in clf.predict(x)],
                       train_accuracy=float(clf.score(x_tr, y_tr)),
                       test_accuracy=float(clf.score(x_te, y_te)))


def main_latents(latents: np.ndarray, positive: np.ndarray, max_k: int = 5, f1_jump: float = 0.03
                 ) -> tuple[list[int], list[float]]:
    """k-sparse probing: latents [n, F], positive [n] bool -> (chosen latents, F1 for k = 1..len+1)."""
    diff = latents[positive].mean(0) - latents[~positive].mean(0)  # [F]
    ranked = np.argsort(-diff, kind="stable")[:max_k]
    chosen: list[int] = []
    f1s: list[float] = []
    for k in range(1, len(ranked) + 1):
        feats = latents[:, ranked[:k]]
        if feats.std() == 0:
            f1 = 0.0
        else:
            clf = LogisticRegression(max_iter=1000, class_weight="balanced").fit(feats, positive)
            f1 = float(f1_score(positive, clf.predict(feats)))
        if k > 1 and f1 - f1s[-1] < f1_jump:
            f1s.append(f1)
            break
        f1s.append(f1)
        chosen = [int(i) for i in ranked[:k]]
    return chosen, f1s


@torch.no_grad()
def first_letter_absorption(sae: SAE, acts: Tensor, tokens: LetterTokens, probe: LetterProbe,
                            max_k: int = 5, f1_jump: float = 0.03, min_cosine: float = 0.025,
                            max_absorber_tokens: int = 5, max_examples: int = 10) -> dict[str, Any]:
    """Absorption per letter of a groups=1 SAE on token activations acts [n, d]."""
    if sae.cfg.groups != 1:
        raise CircuitsError(f"first-letter absorption needs a single SAE (groups=1), got {sae.cfg.groups}")
    f = sae.encode(acts.to(sae.W_enc.dtype)).double()  # [n, F]
    dec = sae.W_dec[0].double() / float(sae.input_scale[0])  # [F, d] caller units
    enc_unit = normalise_rows(sae.W_enc[0].T)  # [F, d]
    dec_unit = normalise_rows(dec)
    fires = f > 0
    tokens_fired = fires.sum(0)  # [F]: evaluated tokens each latent fires on
    letters = np.asarray(tokens.letters)
    preds = np.asarray(probe.predictions)
    f_np = f.numpy()
    per_letter: list[dict[str, Any]] = []
    for li, letter in enumerate(probe.classes):  # a loop over letters (26 at most)
        u = probe.directions[li]  # [d]
        positive = letters == letter
        main, f1s = main_latents(f_np, positive, max_k, f1_jump)
        correct = positive & (preds == letter)
        main_fires = fires[:, main].any(-1).numpy() if main else np.zeros(len(letters), bool)
        fn = np.flatnonzero(correct & ~main_fires)
        contrib = f[fn] * (dec @ u)[None, :]  # [n_fn, F]: each latent's part along u_L
        top = contrib.argmax(-1)  # [n_fn]
        top_val = contrib.gather(1, top[:, None]).squeeze(1)
        cos = dec_unit[top] @ u
        carrier = (top_val > 0) & (cos >= min_cosine) & ~torch.isin(top, torch.tensor(main, dtype=torch.long))
        specific = carrier & (tokens_fired[top] <= max_absorber_tokens)
        n_correct = int(correct.sum())
        examples = [{"token": tokens.strings[int(fn[i])], "absorbing_latent": int(top[i]),
                     "cosine_with_probe": float(cos[i]), "tokens_fired": int(tokens_fired[top[i]])}
                    for i in np.flatnonzero(specific.numpy())[:max_examples]]
        per_letter.append({
            "letter": letter, "n_tokens": int(positive.sum()), "n_probe_correct": n_correct,
            "main_latents": [{"latent": j, "encoder_cosine": float(enc_unit[j] @ u.to(enc_unit.dtype)),
                              "decoder_cosine": float(dec_unit[j] @ u)} for j in main],
            "k_sparse_f1": f1s, "false_negatives": len(fn), "absorbed_any_carrier": int(carrier.sum()),
            "absorbed": int(specific.sum()),
            "false_negative_rate": len(fn) / max(n_correct, 1),
            "absorption_rate": int(specific.sum()) / max(n_correct, 1),
            "examples": examples,
        })
    n_correct = sum(p["n_probe_correct"] for p in per_letter)
    return {
        "n_tokens": len(tokens), "letters": probe.classes,
        "probe": {"train_accuracy": probe.train_accuracy, "test_accuracy": probe.test_accuracy},
        "absorption_rate": sum(p["absorbed"] for p in per_letter) / max(n_correct, 1),
        "false_negative_rate": sum(p["false_negatives"] for p in per_letter) / max(n_correct, 1),
        "mean_letter_absorption_rate": float(np.mean([p["absorption_rate"] for p in per_letter])),
        "per_letter": per_letter,
        "criteria": {"max_k": max_k, "f1_jump": f1_jump, "min_cosine": min_cosine,
                     "max_absorber_tokens": max_absorber_tokens},
        "definitions": {
            "main_latents": f"k-sparse probing: latents ranked by mean activation difference, added while F1 "
                            f"rises by >= {f1_jump:g}",
            "false_negative": "token of the letter, probe correct, no main latent fires",
            "absorbed": f"false negative whose top latent along the probe direction is not a main latent, "
                        f"has decoder cosine >= {min_cosine:g} with it and fires on <= "
                        f"{max_absorber_tokens} tokens",
            "absorption_rate": "absorbed / probe-correct tokens (pooled over letters)",
        },
    }


def zipf_rows(acts: Tensor, n_rows: int, seed: int = 0, exponent: float = 1.0) -> Tensor:
    """Training rows drawn from token activations [n, d] with Zipf frequencies over a random token order
    (frequent tokens earn their own latents, which is what invites absorption) -> [n_rows, d]."""
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(acts.shape[0], generator=gen)
    weights = torch.empty(acts.shape[0], dtype=torch.float64)
    weights[order] = torch.arange(1, acts.shape[0] + 1, dtype=torch.float64).pow(-exponent)
    idx = torch.multinomial(weights, n_rows, replacement=True, generator=gen)
    return acts[idx]


def run_first_letter(loaded: Any, hook: str, settings: list[Any], run: Any, rows: int, min_per_letter: int,
                     max_tokens: int | None, f1_jump: float, min_cosine: float, max_absorber_tokens: int,
                     sae: SAE | None = None, sae_label: str | None = None,
                     progress: Progress | None = None) -> dict[str, Any]:
    """The whole first-letter pipeline on a loaded model: token activations at `hook`, the letter probe,
    then absorption of a given SAE, or of SAEs trained here for every setting x seed of `run`."""
    from circuits.sae import make_sae, train_sae
    from circuits.sae.metrics import reconstruction_metrics

    report = progress or (lambda _label, _done, _total: None)
    tokens = letter_tokens(loaded.tokenizer, min_per_letter, max_tokens)
    acts = token_activations(loaded.model, tokens, hook, int(loaded.tokenizer.bos_token_id))  # [tokens, d]
    probe = fit_probe(acts, tokens.letters, seed=run.data_seed)
    runs: list[dict[str, Any]] = []
    if sae is not None:
        if sae.cfg.d_in != acts.shape[1]:
            raise CircuitsError(f"{sae_label}: the SAE reads d_in={sae.cfg.d_in}, hook {hook} has "
                                f"{acts.shape[1]}")
        runs.append({"label": sae_label, **first_letter_absorption(
            sae, acts, tokens, probe, f1_jump=f1_jump, min_cosine=min_cosine,
            max_absorber_tokens=max_absorber_tokens)})
    else:
        x = zipf_rows(acts, rows, seed=run.data_seed)  # [rows, d]
        for done, setting in enumerate(settings):
            for seed in run.seeds:
                trained = make_sae(setting.sae_config(int(acts.shape[1]), run.d_sae, 1), seed=seed)
                train_sae(trained, x, steps=run.steps, lr=run.lr, batch_size=run.batch_size,
                          seed=run.data_seed, normalize_inputs=True, lr_decay_steps=run.steps // 5,
                          callback=_step_reporter(report, setting.label))
                trained.eval()
                res = first_letter_absorption(trained, acts, tokens, probe, f1_jump=f1_jump,
                                              min_cosine=min_cosine, max_absorber_tokens=max_absorber_tokens)
                m = reconstruction_metrics(trained, acts)
                runs.append({"label": setting.label, "seed": seed, "l0": m["l0"][0], "fvu": m["fvu"][0],
                             **res})
            report("settings", done + 1, len(settings))
    return {"model": loaded.name, "hook": hook, "n_tokens": len(tokens), "letters": probe.classes,
            "probe": {"train_accuracy": probe.train_accuracy, "test_accuracy": probe.test_accuracy},
            "sae": sae_label if sae is not None else None, "training_rows": None if sae is not None else rows,
            "summary": first_letter_summary(runs), "runs": runs}


def _step_reporter(report: Progress, label: str) -> Callable[[int, int, dict[str, float]], None]:
    """The trainer's (step, total, metrics) callback as a (label, done, total) progress call."""

    def callback(step: int, total: int, _metrics: dict[str, float]) -> None:
        report(label, step, total)

    return callback


def first_letter_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (population) std over seeds of each setting's absorption, false negatives, L0, FVU."""
    out = []
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        row: dict[str, Any] = {"label": label, "n_runs": len(mine)}
        for key in ("absorption_rate", "false_negative_rate", "l0", "fvu"):
            vals = [r[key] for r in mine if key in r]
            if vals:
                row[key] = mean_std(vals)
        out.append(row)
    return out

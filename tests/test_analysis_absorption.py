"""Feature absorption: hierarchical data, constructed SAEs whose answer is known, the first-letter pipeline
on a model whose vocabulary is built for it, and the direction theory predicts."""

from __future__ import annotations

import pytest
import torch

from circuits.analysis.absorption import absorption_stats, run_absorption_sweep
from circuits.analysis.first_letter import (
    first_letter_absorption,
    fit_probe,
    letter_tokens,
    main_latents,
    token_activations,
)
from circuits.analysis.hierarchy import make_hierarchy
from circuits.analysis.letters_toy import build_letter_model, toy_directions
from circuits.analysis.seeds import ArchSetting, SeedRunConfig
from circuits.errors import CircuitsError
from circuits.sae import SAEConfig, make_sae
from circuits.tokenizer import WordTokenizer


def test_hierarchy_children_only_with_their_parent():
    feats = make_hierarchy(n_parents=3, children_per_parent=4, n_free=5, d_in=32, p_parent=0.3, p_child=0.6)
    _, coeff = feats.sample(20000, seed=0)
    on = coeff > 0
    parents, children = on[:, :3], on[:, 3:15].reshape(-1, 3, 4)
    assert not (children.any(-1) & ~parents).any()  # never a child without its parent
    assert children.sum(-1).max() <= 1  # children of one parent are exclusive
    assert float(parents.float().mean()) == pytest.approx(0.3, abs=0.01)
    assert float(children.any(-1)[parents].float().mean()) == pytest.approx(0.6, abs=0.02)
    family = feats.directions[:15]
    assert torch.allclose(family @ family.T, torch.eye(15), atol=1e-5)  # the family is orthonormal
    assert feats.parent_of()[3:7].tolist() == [0, 0, 0, 0] and feats.parent_of()[0] == -1


def _constructed_saes(feats):
    """Group 0: one latent per feature (no absorption). Group 1: the parent latent is inhibited by the
    children and each child latent's decoder is (parent + child)/sqrt(2): full absorption."""
    p, c1, c2 = feats.directions[:3]
    sae = make_sae(SAEConfig(d_in=feats.d_in, d_sae=3, arch="relu", groups=2))
    with torch.no_grad():
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_enc[0] = torch.stack([p, c1, c2]).T
        sae.W_dec[0] = torch.stack([p, c1, c2])
        sae.W_enc[1] = torch.stack([p - 2 * (c1 + c2), c1, c2]).T
        sae.W_dec[1] = torch.stack([p, (p + c1) / 2 ** 0.5, (p + c2) / 2 ** 0.5])
    sae.eval()
    return sae


def test_absorption_on_constructed_saes_with_known_answer():
    feats = make_hierarchy(n_parents=1, children_per_parent=2, n_free=0, d_in=8, p_parent=0.5, p_child=0.5,
                           magnitude=(1.0, 1.0))
    x, coeff = feats.sample(4000, seed=1)
    stats = absorption_stats(_constructed_saes(feats), feats, x, coeff, min_carried=0.5)
    assert stats["absorption_rate"] == [0.0, 1.0]
    assert stats["false_negative_with_child"] == [0.0, 1.0]
    assert stats["recall_parent_alone"] == [1.0, 1.0]  # the absorbed parent still fires alone
    assert stats["carried_fraction"][0] == pytest.approx(0.0, abs=1e-6)
    assert stats["carried_fraction"][1] == pytest.approx(2 ** -0.5, abs=1e-5)
    assert stats["rows_with_child"] == int(((coeff[:, 0] > 0) & (coeff[:, 1:3] > 0).any(-1)).sum())
    # Silent but not carried enough: a false negative that does not count as absorption.
    strict = absorption_stats(_constructed_saes(feats), feats, x, coeff, min_carried=0.8)
    assert strict["absorption_rate"] == [0.0, 0.0]
    assert strict["false_negative_with_child"] == [0.0, 1.0]


def test_absorption_grows_with_sparsity_pressure_as_theory_predicts():
    """TopK at k=2 (below the data's L0 of 2.3) must absorb clearly; at k=8 much less."""
    feats = make_hierarchy()
    run = SeedRunConfig(d_sae=64, seeds=(0,), steps=600)
    result = run_absorption_sweep(feats, [ArchSetting("topk", k=2), ArchSetting("topk", k=8)], run,
                                  n_train=8192, n_eval=4096)
    tight, loose = (r["absorption_rate"]["mean"] for r in result["settings"])
    assert tight > 0.2, tight
    assert tight > loose + 0.1, (tight, loose)
    assert result["trends"]["topk"]["as_theory_predicts"] is True
    # Control: with slack (k=8) the parent latent exists and fires when the parent comes alone.
    assert result["settings"][1]["recall_parent_alone"]["mean"] > 0.8


# ---- first-letter pipeline ---------------------------------------------------------------------------
LETTERS = "abcd"
ABSORBED = {"a": 3, "b": 1}  # tokens per letter whose letter latent is silent and a token latent carries it
SILENT_ONLY = {"c": 1}  # silent letter latent, nothing carries the letter: a false negative, not absorbed


@pytest.fixture(scope="module")
def letters():
    loaded = build_letter_model(LETTERS, words_per_letter=40, seed=0)
    tokens = letter_tokens(loaded.tokenizer)
    acts = token_activations(loaded.model, tokens, "hook_embed", loaded.tokenizer.bos_token_id)
    return loaded, tokens, acts


def _planted_sae(loaded, tokens):
    """Letter latents (enc = letter direction, minus the planted tokens) + one token latent per absorbed
    token whose decoder is (letter + token)/|.| and which fires on that token only."""
    letter_dirs, word_dirs = toy_directions(loaded)
    scale = loaded.manifest["token_scale"]
    plan = {letter: [w for w in tokens.strings if w[1] == letter][:n] for letter, n in
            {**ABSORBED, **SILENT_ONLY}.items()}
    absorbed = [w for letter in ABSORBED for w in plan[letter]]
    d = letter_dirs.shape[1]
    sae = make_sae(SAEConfig(d_in=d, d_sae=len(LETTERS) + len(absorbed), arch="relu"))
    enc = torch.zeros(d, len(LETTERS) + len(absorbed))
    dec = torch.zeros(len(LETTERS) + len(absorbed), d)
    b_enc = torch.zeros(len(LETTERS) + len(absorbed))
    for i, letter in enumerate(LETTERS):
        inhibit = sum((word_dirs[w] for w in plan.get(letter, [])), torch.zeros(d))
        enc[:, i] = letter_dirs[i] - (2.0 / scale) * inhibit  # 1 - 2 = -1 on a planted token: silent
        dec[i] = letter_dirs[i]
    for j, word in enumerate(absorbed):
        latent = len(LETTERS) + j
        enc[:, latent] = word_dirs[word]
        b_enc[latent] = -0.5 * scale
        direction = letter_dirs[LETTERS.index(word[1])] + scale * word_dirs[word]
        dec[latent] = direction / direction.norm()
    with torch.no_grad():
        sae.W_enc[0], sae.W_dec[0], sae.b_enc[0] = enc, dec, b_enc
        sae.b_dec.zero_()
    sae.eval()
    return sae, plan


def test_first_letter_tokens_and_probe(letters):
    loaded, tokens, acts = letters
    assert len(tokens) == 160 and sorted(set(tokens.letters)) == list(LETTERS)
    assert all(s[1] == letter for s, letter in zip(tokens.strings, tokens.letters, strict=True))
    probe = fit_probe(acts, tokens.letters)
    assert probe.test_accuracy == 1.0
    letter_dirs, _ = toy_directions(loaded)
    # Each letter's probe direction points along its letter direction more than along any other letter.
    align = probe.directions.float() @ letter_dirs.T  # [letters, letters]
    assert torch.equal(align.argmax(-1), torch.arange(len(LETTERS)))


def test_first_letter_absorption_on_planted_sae_has_the_known_answer(letters):
    loaded, tokens, acts = letters
    sae, plan = _planted_sae(loaded, tokens)
    probe = fit_probe(acts, tokens.letters)
    result = first_letter_absorption(sae, acts, tokens, probe)
    by_letter = {p["letter"]: p for p in result["per_letter"]}
    for i, letter in enumerate(LETTERS):
        entry = by_letter[letter]
        assert [m["latent"] for m in entry["main_latents"]] == [i]  # token latents are not feature splits
        assert entry["absorbed"] == ABSORBED.get(letter, 0)
        assert entry["false_negatives"] == ABSORBED.get(letter, 0) + SILENT_ONLY.get(letter, 0)
    assert {e["token"] for e in by_letter["a"]["examples"]} == set(plan["a"])
    assert all(e["tokens_fired"] == 1 for e in by_letter["a"]["examples"])
    assert result["absorption_rate"] == pytest.approx(4 / 160)
    # A looser token-specificity bound changes nothing here; a zero bound rejects every absorber.
    strict = first_letter_absorption(sae, acts, tokens, probe, max_absorber_tokens=0)
    assert strict["absorption_rate"] == 0.0
    assert sum(p["absorbed_any_carrier"] for p in strict["per_letter"]) == 4


def test_main_latents_counts_a_feature_split():
    """Two latents that each fire on half of the positives: the second raises F1 far more than 0.03."""
    positive = torch.arange(40) < 20
    latents = torch.zeros(40, 3)
    latents[:10, 0] = 1.0
    latents[10:20, 1] = 1.0
    latents[25, 2] = 0.1
    chosen, f1s = main_latents(latents.numpy(), positive.numpy())
    assert sorted(chosen) == [0, 1]
    assert f1s[1] - f1s[0] >= 0.03


def test_letter_tokens_refuses_a_vocabulary_without_words():
    with pytest.raises(CircuitsError):
        letter_tokens(WordTokenizer([" 1", " 2", "."]))

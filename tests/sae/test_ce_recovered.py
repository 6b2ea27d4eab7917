"""CE loss recovered against its formula on cases whose answer is known, including values above 1.

`circuits sae eval` printed 1.305 on tiny-ioi: (CE_zero - CE_sae) / (CE_zero - CE_clean) exceeds 1 exactly
when the spliced model's CE is below the clean model's. A reconstruction that scales the activation by
`alpha` gives a known spliced CE (the model run with the activation scaled), so the metric can be checked
against the formula for every alpha, above 1 included; the CLI then states why such a value is legitimate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.models import load_model
from circuits.sae.metrics import ce_loss_recovered
from circuits.sae.sources import token_batches
from tests.sae.test_metrics import _identity_sae

HOOK = "blocks.0.hook_resid_post"


def _scaled_ce(model, tokens: torch.Tensor, alpha: float, keep: torch.Tensor) -> float:
    """CE with the hook's activation multiplied by alpha outside `keep`: computed without any SAE."""

    def scale(act: torch.Tensor, hook: object) -> torch.Tensor:
        return torch.where(keep[..., None], act, alpha * act)

    with torch.no_grad():
        return float(model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(HOOK, scale)]))


def test_ce_loss_recovered_matches_formula_for_scaled_reconstructions(tiny_model_dir: Path,
                                                                      corpus_txt: Path) -> None:
    lm = load_model(str(tiny_model_dir))
    tokens = token_batches(corpus_txt, lm.tokenizer, 16, 8)
    keep = tokens == 0
    with torch.no_grad():
        clean = float(lm.model(tokens, return_type="loss"))
    zero = _scaled_ce(lm.model, tokens, 0.0, keep)
    seen_above_one = False
    for alpha in (0.0, 0.5, 0.9, 1.0, 1.1, 1.5, 2.0, 3.0):
        got = ce_loss_recovered(lm.model, _identity_sae(32, scale=alpha), HOOK, tokens, batch_size=4,
                                bos_token_id=0)
        spliced = _scaled_ce(lm.model, tokens, alpha, keep)
        assert got["ce_sae"] == pytest.approx(spliced, rel=1e-4)
        assert got["ce_clean"] == pytest.approx(clean, rel=1e-5)
        assert got["ce_zero"] == pytest.approx(zero, rel=1e-4)
        expected = (zero - spliced) / (zero - clean)
        assert got["ce_loss_recovered"] == pytest.approx(expected, rel=1e-3, abs=1e-4)
        # Above 1 exactly when the spliced CE is below the clean CE: legitimate, not a bug.
        assert (got["ce_loss_recovered"] > 1 + 1e-6) == (spliced < clean - 1e-6 * abs(clean))
        seen_above_one |= got["ce_loss_recovered"] > 1
    assert seen_above_one, "some scaling of this untrained model's residual lowers its CE"

"""The report's explanation section (payload["explain"], circuits.explain): a role line per head, then its
codes with their counts, attention, direct effect, patch drop and examples."""

from __future__ import annotations

import html
from typing import Any


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _unique(head: dict[str, Any]) -> str:
    return ", ".join(f"{u['code']} ({u['n_positive']})" for u in head.get("positive_unique_codes", []))


def explain_html(payload: dict[str, Any]) -> str:
    """The section's HTML, or "" when the payload has no explanation."""
    block = payload.get("explain")
    if not isinstance(block, dict) or not isinstance(block.get("heads"), list):
        return ""
    source = block.get("codes_from") or {}
    direct = block.get("direct_effect") or {}
    intro = (f"<p class='muted'>{_esc(block.get('n_prompts'))} prompt pairs (the run's first scoring "
             f"prompts); codes from {_esc(source.get('input', source.get('kind', '')))}; direct effect: "
             f"{_esc(direct.get('of', ''))} ({_esc(direct.get('note', ''))}); causal check: "
             f"{_esc(block.get('causal_check', ''))}. Roles come from these measurements, never from a "
             f"head's index.</p>")
    roles = "".join(f"<tr><td>L{h['head'][0]}H{h['head'][1]}</td><td>{_esc(h['role']['kind'])}</td>"
                    f"<td>{_esc(h['role']['line'])}</td><td>{_esc(_unique(h))}</td></tr>"
                    for h in block["heads"])
    rows = []
    for h in block["heads"]:
        for c in h.get("codes", []):
            examples = "<br>".join(_esc(e) for e in c.get("examples", []))
            rows.append(
                f"<tr><td>L{h['head'][0]}H{h['head'][1]}</td><td>{_esc(c['code'])}</td>"
                f"<td class='num'>{c['n_positive']}</td><td class='num'>{c['n_negative']}</td>"
                f"<td>{'yes' if c['positive_unique'] else ''}</td>"
                f"<td>{_esc(c['top_position'])} {_pct(c['top_share'])}</td>"
                f"<td class='num'>{c['direct_effect']:.3g}</td>"
                f"<td class='num'>{_pct(c['patch']['drop_fraction'])}</td><td>{examples}</td></tr>")
    codes = ("<table><tr><th>head</th><th>code</th><th>positives</th><th>negatives</th><th>positive-only</th>"
             "<th>looks at</th><th>direct effect</th><th>patch drop</th><th>examples ([[attended]])</th></tr>"
             + "".join(rows) + "</table>")
    return (intro + "<table><tr><th>head</th><th>kind</th><th>role</th><th>codes on positives only (count)"
            "</th></tr>" + roles + "</table>"
            + "<h3>Codes</h3>" + codes)

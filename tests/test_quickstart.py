"""examples/quickstart.py (the README's Python quick-start) runs on the bundled model and writes its files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import networkx as nx

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


def test_quickstart_finds_compares_draws_and_saves(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.main(["--out", str(tmp_path / "out"), "--n-score", "30"])
    printed = capsys.readouterr().out
    for method in ("sae", "eap"):
        assert written[f"{method}_png"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        graph = nx.read_graphml(written[f"{method}_graphml"])
        assert graph.number_of_nodes() == 4 * 8  # tiny-ioi: every head is a node
        assert f"{method}: " in printed
    assert "node ROC AUC" in printed and "rank agreement sae vs eap" in printed
    assert "activation difference" in printed  # the SAE method's null model is shown beside it

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


def test_readme_python_block_compiles_and_its_imports_exist():
    """The README's quick-start is the example above in short: it must parse and import what it names (running
    it is the test above's job)."""
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    compile(block, "README.md", "exec")
    imports = "\n".join(line for line in block.splitlines() if line.startswith(("from ", "import ")))
    exec(compile(imports, "README.md", "exec"), {})
    assert "find_circuit_with" in block and "compare_methods" in block and "export_graph" in block

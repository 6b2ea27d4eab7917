"""Circuit graphs export and read back through networkx without losing scores."""

from __future__ import annotations

import torch

from circuits.discovery.graph import build_graph, export_graph, load_graph, to_dot


def _graph():
    scores = torch.tensor([[1.0, 0.0], [2.5, 0.5]])
    in_circuit = scores > 0.75
    edges = {((0, 0), (1, 0)): 3.0, ((0, 1), (1, 1)): 0.0, ((0, 0), (1, 1)): 1.5}
    return build_graph(scores, in_circuit, edges, frozenset({(0, 0)}))


def test_graph_nodes_and_edges():
    graph = _graph()
    assert graph.number_of_nodes() == 4
    assert graph.number_of_edges() == 2  # the zero-score edge is dropped
    assert graph.nodes["L1H0"]["score"] == 2.5
    assert graph.edges["L0H0", "L1H0"]["in_circuit"]
    assert not graph.edges["L0H0", "L1H1"]["in_circuit"]
    assert graph.nodes["L0H0"]["in_ground_truth"]


def test_exports_round_trip(tmp_path):
    graph = _graph()
    files = export_graph(graph, tmp_path)
    assert set(files) == {"graphml", "gexf", "json", "dot"}
    for fmt in ("graphml", "gexf", "json"):
        back = load_graph(tmp_path / files[fmt].split("/")[-1])
        assert set(back.nodes) == set(graph.nodes)
        assert {(a, b) for a, b in back.edges} == {(a, b) for a, b in graph.edges}
        assert float(back.nodes["L1H0"]["score"]) == 2.5
    dot = to_dot(graph)
    assert '"L0H0" -> "L1H0"' in dot and dot.startswith("digraph")
    assert not list(tmp_path.glob("*.tmp"))

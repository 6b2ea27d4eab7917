"""Circuit results as networkx graphs, and their exports (GraphML, GEXF, node-link JSON, DOT).

Nodes are heads named "L{layer}H{head}" with attributes layer, head, score, in_circuit;
edges go from an earlier-layer head to a later-layer head with attributes score, in_circuit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import torch

from circuits.atomic import atomic_write
from tasks.base import Head

EXPORT_FORMATS = {"graphml": "circuit.graphml", "gexf": "circuit.gexf", "json": "circuit.json",
                  "dot": "circuit.dot"}


def node_name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def build_graph(node_scores: torch.Tensor, in_circuit: torch.Tensor,
                edge_scores: dict[tuple[Head, Head], float], truth_heads: frozenset[Head] | None = None,
                ) -> nx.DiGraph:
    """node_scores, in_circuit: [layer, head]; edges with a positive score become graph edges."""
    graph = nx.DiGraph()
    n_layers, n_heads = node_scores.shape
    for layer in range(n_layers):
        for h in range(n_heads):
            attrs = {"layer": layer, "head": h, "score": float(node_scores[layer, h]),
                     "in_circuit": bool(in_circuit[layer, h])}
            if truth_heads is not None:
                attrs["in_ground_truth"] = (layer, h) in truth_heads
            graph.add_node(node_name((layer, h)), **attrs)
    for (a, b), score in edge_scores.items():
        if score > 0:
            graph.add_edge(node_name(a), node_name(b), score=float(score),
                           in_circuit=bool(in_circuit[a] and in_circuit[b]))
    return graph


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT text; circuit heads filled, heads ranked by layer."""
    lines = ["digraph circuit {", "  rankdir=BT;", "  node [shape=box, fontname=Helvetica];"]
    by_layer: dict[int, list[str]] = {}
    for name, attrs in graph.nodes(data=True):
        by_layer.setdefault(attrs["layer"], []).append(name)
        style = ', style=filled, fillcolor="#f4a261"' if attrs["in_circuit"] else ""
        lines.append(f'  "{name}" [label="{name}\\n{attrs["score"]:.3g}"{style}];')
    for names in by_layer.values():
        lines.append("  { rank=same; " + " ".join(f'"{n}";' for n in names) + " }")
    for a, b, attrs in graph.edges(data=True):
        if attrs["in_circuit"]:
            lines.append(f'  "{a}" -> "{b}" [label="{attrs["score"]:.3g}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def export_graph(graph: nx.DiGraph, directory: Path) -> dict[str, str]:
    """Write every export format into `directory` (atomically); returns format -> path."""
    directory = Path(directory)
    written = {}
    writers: dict[str, Callable[[str], object]] = {
        "graphml": lambda p: nx.write_graphml(graph, p),
        "gexf": lambda p: nx.write_gexf(graph, p),
        "json": lambda p: Path(p).write_text(json.dumps(nx.node_link_data(graph, edges="edges"))),
        "dot": lambda p: Path(p).write_text(to_dot(graph)),
    }
    for fmt, filename in EXPORT_FORMATS.items():
        path = directory / filename
        atomic_write(path, writers[fmt])
        written[fmt] = str(path)
    return written


def load_graph(path: Path) -> nx.DiGraph:
    """Read back any export except DOT (networkx reads DOT only through pydot)."""
    path = Path(path)
    if path.suffix == ".graphml":
        return nx.read_graphml(path)
    if path.suffix == ".gexf":
        return nx.read_gexf(path)
    if path.suffix == ".json":
        return nx.node_link_graph(json.loads(path.read_text()), edges="edges")
    raise ValueError(f"cannot read graph format '{path.suffix}'")

"""Social networks over agents (networkx): small-world, scale-free or an edge list file."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from popsim.config import NetworkConfig
from popsim.exceptions import DataError, first_line

__all__ = ["build_network"]


def build_network(config: NetworkConfig, n_agents: int, *, seed: int, base_dir: str | Path = ".") -> nx.Graph:
    """A graph whose nodes are agent ids 0..n-1."""
    if n_agents < 2 and config.kind != "edge_list":  # a lone agent has no neighbours (the generators refuse it)
        return nx.empty_graph(n_agents)
    if config.kind == "small_world":
        k = min(config.degree, max(n_agents - 1, 1))
        return nx.watts_strogatz_graph(n_agents, k, config.rewire, seed=seed)
    if config.kind == "scale_free":
        m = min(config.degree, max(n_agents - 1, 1))
        return nx.barabasi_albert_graph(n_agents, m, seed=seed)
    path = Path(config.path or "")
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise DataError(f"network.path {path} does not exist; give an edge list file 'source target' per line")
    try:
        graph = nx.read_edgelist(path, nodetype=int)
    except (TypeError, ValueError, UnicodeDecodeError) as exc:  # networkx: TypeError for a non-integer node
        raise DataError(f"network.path {path} is not an edge list of agent ids ({first_line(exc)}); write one "
                        "'source target' pair of whole numbers per line") from None
    graph.add_nodes_from(range(n_agents))
    bad = [v for v in graph.nodes if not 0 <= v < n_agents]
    if bad:
        raise DataError(f"network.path {path} names agents {bad[:5]} outside 0..{n_agents - 1}; fix the ids")
    return graph

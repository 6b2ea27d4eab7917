"""Edge-level circuits: the residual-stream graph (`graph`), patching any set of edges with per-edge weights
that can carry a gradient (`patching`), and attribution scores over edges (`attribution`)."""

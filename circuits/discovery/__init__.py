"""The discrete-SAE pipeline, one module per stage in data-flow order:
config -> activations -> codes (SAEs) -> scoring -> selection -> graph; `pipeline.find_circuit` runs them."""

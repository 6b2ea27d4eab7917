"""circuits: find circuits in transformer language models with discrete sparse autoencoders."""

from circuits.threads import set_env_defaults

# Before any of our modules imports torch: its OpenMP runtime reads the wait policy once, when it loads.
set_env_defaults()

__version__ = "0.1.0"

"""The one place that imports TransformerLens and silences its deprecation noise."""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: F401
    from transformer_lens import loading_from_pretrained as tl_loading  # noqa: F401

warnings.filterwarnings("ignore", module="transformer_lens")
warnings.filterwarnings("ignore", message=".*TransformerBridge.*")
warnings.filterwarnings("ignore", message=".*HookedTransformer.*deprecat.*")

__all__ = ["HookedTransformer", "HookedTransformerConfig", "tl_loading"]

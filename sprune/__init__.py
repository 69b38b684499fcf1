"""sprune: prune self-supervised speech models and the language models used beside them."""

__version__ = "0.1.0"

"""icl: in-context learning of function classes with transformers."""

__version__ = "0.1.0"

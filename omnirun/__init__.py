"""omnirun: a config-driven runner for Transformers inference."""

__version__ = "0.1.0"

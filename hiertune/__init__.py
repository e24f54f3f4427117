"""hiertune: hyperparameter sweeps for hierarchical open-set image classification."""

__version__ = "0.1.0"

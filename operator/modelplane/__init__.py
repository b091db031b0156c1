"""modelplane: a Kubernetes operator that serves models on GPUs, and says why when it cannot."""

__version__ = "0.1.0"

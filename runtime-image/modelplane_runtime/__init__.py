"""The modelplane inference runtime: Open Inference Protocol v2 over HTTP and gRPC."""

__version__ = "0.1.0"

"""perfbox: a GPU performance-tools sandbox service for reasoning models that write kernels."""

__version__ = "0.1.0"

"""gpubroker: a multi-cloud GPU broker and scheduler."""

__version__ = "0.1.0"

"""lightfer: find every face and tell its facial expression, fast on a CPU."""
__version__ = "0.1.0"

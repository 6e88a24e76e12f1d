"""algotrading: notebook-first algorithmic trading research, locally or on AWS."""

__version__ = "0.1.0"

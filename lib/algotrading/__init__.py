"""algotrading: notebook-first algorithmic trading research, locally or on AWS."""

from algotrading import numerics

numerics.pin()  # before numpy, scipy or torch load their kernels (see algotrading.numerics)

__version__ = "0.1.0"

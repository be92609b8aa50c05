"""realfake: the Real-Fake (ICLR 2024) training-data synthesis method as importable stages.

Each stage is a module with plain functions (unit-tested) and a small ``main`` used by the
Snakemake rules through ``python -m realfake.<stage>``.
"""

__version__ = "0.1.0"

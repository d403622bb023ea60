"""hydraopt: simulation-coupled optimisation of patient-specific injectable cardiac hydrogels.

The package root stays light (no torch, no h5py): plugins import ``hookimpl`` from here.
"""

from hydraopt.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]

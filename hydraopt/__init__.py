"""hydraopt: simulation-coupled optimisation of patient-specific injectable cardiac hydrogels.

The package root stays light (no torch, no h5py): plugins import ``hookimpl`` (and the
plugin contract's version, ``HOOKS_VERSION``) from here.
"""

from hydraopt.hookspecs import HOOKS_VERSION, hookimpl

__version__ = "0.1.0"

__all__ = ["HOOKS_VERSION", "__version__", "hookimpl"]

"""A hydraopt simulator plugin: the LV's end-systolic wall stress as a thick-walled sphere."""

__version__ = "0.1.0"

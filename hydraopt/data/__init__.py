"""Data bundled with hydraopt: the cardiac hydrogel library (see README.md here)."""

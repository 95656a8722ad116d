"""Lumin: a Jupyter-native observatory for running software."""

from lumin_nb._version import __version__

__all__ = ["__version__"]

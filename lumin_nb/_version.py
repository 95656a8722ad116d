"""The version of Lumin, read by the build and by `lumin version`."""

__version__ = "0.1.0"

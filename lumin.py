"""`import lumin as lm` and `%load_ext lumin`: the facade over lumin_nb's public API."""

from lumin_nb import *  # noqa: F403
from lumin_nb import (  # noqa: F401
    __all__,
    __version__,
    load_ipython_extension,
    unload_ipython_extension,
)

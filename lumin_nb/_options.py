"""`lm.options`: process-wide display and return-type options."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

from lumin_nb.errors import ConfigError, closest

if TYPE_CHECKING:
    import polars as pl

FrameKind = Literal["polars", "pandas"]


class Options:
    """Options every API function obeys; set attributes, e.g. ``lm.options.frame = "pandas"``."""

    __slots__ = ("_frame",)

    def __init__(self) -> None:
        self._frame: FrameKind = "polars"

    @property
    def frame(self) -> FrameKind:
        """The type of frame every query and analysis returns: "polars" (default) or "pandas"."""
        return self._frame

    @frame.setter
    def frame(self, value: FrameKind) -> None:
        kinds = get_args(FrameKind)
        if value not in kinds:
            raise ConfigError(
                f"options.frame={value!r} is not a frame type.{closest(str(value), kinds)}\n"
                f"Expected one of: {', '.join(kinds)}.\nFix: lm.options.frame = 'pandas'"
            )
        self._frame = value

    def __repr__(self) -> str:
        return f"Options(frame={self._frame!r})"


options = Options()


def to_frame(df: pl.DataFrame) -> Any:
    """Return `df` as the frame type chosen in `options.frame`."""
    if options.frame == "pandas":
        try:
            return df.to_pandas()
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "options.frame='pandas' needs pandas, which is not installed.\n"
                "Fix: pip install 'lumin-nb[pandas]'  (or set lm.options.frame = 'polars')"
            ) from exc
    return df

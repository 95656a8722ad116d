"""Build hook: compiles the native call tracer (`lumin_nb/collect/_ctracer.c`) into the wheel.

The tracer's hot path must be native to reach its overhead figure (DESIGN.md, "Hot paths").
When no C compiler works the build goes on without it: Lumin then uses its pure-Python tracer
and `lm.status()` says so. Set LUMIN_REQUIRE_NATIVE=1 to make a failed compile an error (CI).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("lumin_nb") / "collect" / "_ctracer.c"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compiles `_ctracer` in place so editable installs and wheels both find it."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name not in ("wheel",):
            return
        root = Path(self.root)
        if not (root / SOURCE).exists():
            return
        try:
            built = _compile(root)
        except Exception as exc:  # the pure-Python tracer takes over
            if os.environ.get("LUMIN_REQUIRE_NATIVE") == "1":
                raise
            sys.stderr.write(f"lumin: native tracer not built ({exc}); using the Python one\n")
            return
        if version != "editable":
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            build_data["force_include"][str(built)] = str(built.relative_to(root))


def _compile(root: Path) -> Path:
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    ext = Extension(
        "lumin_nb.collect._ctracer",
        sources=[str(SOURCE)],
        extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-field-initializers"],
    )
    dist = Distribution({"name": "lumin-nb", "ext_modules": [ext]})
    cmd = build_ext(dist)
    cmd.inplace = True
    cwd = os.getcwd()
    os.chdir(root)
    try:
        cmd.ensure_finalized()
        cmd.run()
        return root / cmd.get_ext_fullpath(ext.name)
    finally:
        os.chdir(cwd)

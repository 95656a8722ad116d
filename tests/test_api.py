"""The public API: what `__all__` promises, what README documents, what import costs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lumin
import lumin_nb

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pyarrow", "polars", "duckdb", "numpy", "pandas", "IPython", "psutil", "zmq", "ipykernel")
_IPYTHON_HOOKS = {"load_ipython_extension", "unload_ipython_extension"}


def test_all_is_sorted_and_equals_the_public_names() -> None:
    assert lumin_nb.__all__ == sorted(lumin_nb.__all__)
    public = {
        name
        for name, value in vars(lumin_nb).items()
        if not name.startswith("_")
        and str(getattr(value, "__module__", "")).startswith("lumin_nb")
        and not isinstance(value, type(sys))
    }
    public |= {"__version__"}
    assert set(lumin_nb.__all__) == public - _IPYTHON_HOOKS


def test_facade_reexports_the_api() -> None:
    for name in lumin_nb.__all__:
        assert getattr(lumin, name) is getattr(lumin_nb, name)
    assert lumin.load_ipython_extension is lumin_nb.load_ipython_extension


def test_every_public_name_is_documented_in_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in lumin_nb.__all__ if n != "__version__" and f"lm.{n}" not in readme]
    assert not missing, f"README.md does not show: {missing}"


def test_every_config_key_and_env_var_is_documented() -> None:
    from lumin_nb import config

    readme = (ROOT / "README.md").read_text()
    keys = [k for k in config.Config().as_dict() if k != "profile"]
    missing = [k for k in keys if f"`{k}`" not in readme]
    env = [v for k, v in vars(config).items() if k.startswith("ENV_")]
    missing += [v for v in env if v not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_every_cli_command_is_documented() -> None:
    from lumin_nb.cli import _parser

    readme = (ROOT / "README.md").read_text()
    sub = next(a for a in _parser()._actions if a.dest == "command")
    commands = list(sub.choices)  # type: ignore[arg-type]
    missing = [c for c in commands if f"lumin {c}" not in readme]
    assert not missing, f"README.md does not show: {missing}"


def test_import_loads_no_heavy_module() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import lumin"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(re.findall(r"\|\s+(\S+)$", out.stderr, re.MULTILINE))
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"`import lumin` loaded heavy modules: {heavy}"


def test_api_functions_survive_the_import_of_every_subpackage() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(lumin_nb.__path__, "lumin_nb."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI
        importlib.import_module(info.name)
    for name in lumin_nb.__all__:
        value = getattr(lumin_nb, name)
        assert not isinstance(value, type(sys)), f"lumin_nb.{name} became a module"

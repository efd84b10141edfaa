"""User plugins: modules outside this repository imported by every command.

A plugin is a Python module that registers things where it is defined (backbones in
``BACKBONE_REGISTRY``, meta-architectures in ``META_ARCH_REGISTRY``, datasets in
``DatasetCatalog``, evaluators, trainers, config adders with ``register_config_adder``).
Every command imports the plugins named in, in this order:

1. the ``reid_plugins.plugins`` entry-point group of the installed distributions (how a
   pip-installed package plugs in; this repository declares ``builtin``);
2. the ``REID_PLUGINS`` environment variable (``os.pathsep``-separated);
3. the ``PLUGINS`` list of the config file, following its ``_BASE_`` chain (read **before**
   the file is merged, because a plugin may add the keys that file uses);
4. ``--plugin MODULE_OR_FILE`` on the command line (repeatable);
5. a ``PLUGINS [...]`` command-line override.

Each entry is a module name (``my_pkg.my_module``, importable from ``sys.path``) or a path
(recognised by a ``.py`` suffix or a path separator, e.g. ``./my_pkg``) to a ``.py`` file or
to a package folder (one holding ``__init__.py``). A relative path is relative to the config
file that lists it (like ``_BASE_``), else to the working directory. A path plugin is
imported under its file or folder name, and the folder holding it is appended to
``sys.path`` (so it can import its siblings). Importing a plugin twice is a no-op.

A plugin that cannot be imported raises :class:`PluginError` whose message is one line naming
the plugin and where it was listed.

See ``docs/plugins.md``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib import metadata
from types import ModuleType
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from .errors import UserError

__all__ = [
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "PluginError",
    "import_plugin",
    "import_plugins",
    "load_entry_point_plugins",
    "plugins_from_config_file",
    "plugins_from_env",
]

#: entry-point group whose members every command imports.
ENTRY_POINT_GROUP = "reid_plugins.plugins"
#: environment variable listing plugins, separated by ``os.pathsep``.
ENV_VAR = "REID_PLUGINS"

_FILE_PLUGINS: Dict[str, ModuleType] = {}  # absolute path -> module


class PluginError(UserError, ImportError):
    """A plugin could not be found or imported; ``str(err)`` is one actionable line (the
    tools print it alone, exit status 2; ``--debug`` shows the traceback)."""

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


def is_file_spec(spec: str) -> bool:
    """True when ``spec`` is a path (to a ``.py`` file or a package folder), not a module."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def resolve_spec(spec: str, base_dir: Optional[str] = None) -> str:
    """A module name unchanged; a file path made absolute (relative to ``base_dir``, default
    the working directory; ``~`` expanded)."""
    spec = str(spec).strip()
    if not is_file_spec(spec):
        return spec
    path = os.path.expanduser(spec)
    if not os.path.isabs(path):
        path = os.path.join(base_dir or os.getcwd(), path)
    return os.path.normpath(path)


def _import_file(path: str) -> ModuleType:
    """Import a ``.py`` file or a package folder under its own name."""
    if path in _FILE_PLUGINS:
        return _FILE_PLUGINS[path]
    is_package = os.path.isdir(path)
    name = os.path.basename(path) if is_package else os.path.splitext(os.path.basename(path))[0]
    init = os.path.join(path, "__init__.py") if is_package else path
    if not name.isidentifier():
        raise ImportError(f"'{name}' is not a valid module name; rename it")
    existing = sys.modules.get(name)
    if existing is not None:
        if os.path.normpath(getattr(existing, "__file__", "") or "") == init:
            _FILE_PLUGINS[path] = existing
            return existing
        raise ImportError(
            f"a module named '{name}' is already imported from "
            f"{getattr(existing, '__file__', None) or 'a built-in'}; rename the plugin"
        )
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.append(folder)  # siblings importable; never shadows installed modules
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[path] if is_package else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _FILE_PLUGINS[path] = module
    return module


def import_plugin(spec: str, source: str = "", base_dir: Optional[str] = None) -> ModuleType:
    """Import one plugin (module name or ``.py`` file) and return the module.

    Args:
        spec: ``pkg.module`` or a path to a ``.py`` file.
        source: where the plugin was listed (for the error message), e.g. ``"--plugin"``.
        base_dir: folder a relative file path is relative to (default: working directory).

    Raises:
        PluginError: the module or file cannot be found, or importing it failed; the message
            names the plugin, ``source`` and the cause in one line.
    """
    where = f" (from {source})" if source else ""
    path = resolve_spec(spec, base_dir)
    try:
        if is_file_spec(path):
            if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "__init__.py")):
                raise PluginError(
                    f"plugin folder '{path}'{where} is not a package (no __init__.py)"
                )
            if not os.path.exists(path):
                raise PluginError(f"plugin file '{path}'{where} does not exist")
            return _import_file(path)
        return importlib.import_module(path)
    except PluginError:
        raise
    except BaseException as e:  # noqa: BLE001 - SyntaxError, SystemExit in user code, ...
        if isinstance(e, KeyboardInterrupt):
            raise
        cause = f"{type(e).__name__}: {e}".splitlines()[0]
        raise PluginError(f"cannot import plugin '{spec}'{where}: {cause}") from e


def import_plugins(specs: Iterable[Tuple[str, str]]) -> List[str]:
    """Import every ``(spec, source)`` (``spec`` already resolved) in order; returns the specs,
    duplicates removed."""
    done: List[str] = []
    for spec, source in specs:
        if spec in done:
            continue
        import_plugin(spec, source)
        done.append(spec)
    return done


def split_plugin_list(value: str) -> List[str]:
    """``REID_PLUGINS`` value -> entries (``os.pathsep``-separated, blanks dropped)."""
    return [s.strip() for s in (value or "").split(os.pathsep) if s.strip()]


def plugins_from_env(environ=None) -> List[Tuple[str, str]]:
    """``(resolved spec, source)`` of the ``REID_PLUGINS`` environment variable."""
    environ = os.environ if environ is None else environ
    return [(resolve_spec(s), f"${ENV_VAR}") for s in split_plugin_list(environ.get(ENV_VAR, ""))]


def _as_list(value, source: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise PluginError(f"{source} must be a list of module names or .py files, got {value!r}")


def plugins_from_config_file(path: str) -> List[Tuple[str, str]]:
    """``(resolved spec, source)`` of the ``PLUGINS`` lists of a YAML file and its ``_BASE_``
    chain (bases first), read without merging anything.

    A missing or unparsable file yields nothing here: merging the file reports it.
    """
    out: List[Tuple[str, str]] = []
    seen = set()
    path = os.path.abspath(os.path.expanduser(path))
    while path and path not in seen and os.path.isfile(path):
        seen.add(path)
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            return out
        if not isinstance(data, dict):
            return out
        source = f"PLUGINS in '{path}'"
        folder = os.path.dirname(path)
        out[:0] = [(resolve_spec(s, folder), source) for s in _as_list(data.get("PLUGINS"), source)]
        base = data.get("_BASE_")
        if not isinstance(base, str) or not base:
            break
        base = os.path.expanduser(base)
        path = base if os.path.isabs(base) else os.path.normpath(os.path.join(folder, base))
    return out


def plugins_from_opts(opts: Sequence[str]) -> List[Tuple[str, str]]:
    """``(resolved spec, source)`` of a ``PLUGINS [...]`` pair among ``KEY VALUE`` overrides."""
    out: List[Tuple[str, str]] = []
    for key, value in zip(list(opts)[0::2], list(opts)[1::2]):
        if key == "PLUGINS":
            source = "the command-line override PLUGINS"
            try:
                parsed = yaml.safe_load(value) if isinstance(value, str) else value
            except yaml.YAMLError:
                parsed = value
            if isinstance(parsed, str) and not parsed.startswith("["):
                parsed = [parsed]
            out += [(resolve_spec(s), source) for s in _as_list(parsed, source)]
    return out


def _entry_points():
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, []))  # pragma: no cover - python < 3.10


def load_entry_point_plugins() -> List[str]:
    """Import the members of the ``reid_plugins.plugins`` entry-point group of every
    installed distribution; returns their module names.

    Raises:
        PluginError: an entry point cannot be loaded (names it and its distribution).
    """
    names = []
    for ep in _entry_points():
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001
            cause = f"{type(e).__name__}: {e}".splitlines()[0]
            raise PluginError(
                f"cannot import plugin '{ep.value}' (entry point '{ep.name}' of distribution "
                f"'{dist}', group {ENTRY_POINT_GROUP}): {cause}"
            ) from e
        names.append(ep.value.split(":")[0])
    return names

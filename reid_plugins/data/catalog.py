"""``DatasetCatalog`` / ``MetadataCatalog``: datasets registered by name as functions.

A dataset is a zero-argument function returning a ``list[dict]`` of records. ReID records
hold at least ``file_name``, ``pid``, ``camid``; person-search records hold ``file_name``,
``height``, ``width``, ``boxes``, ``pids``. The function runs lazily on ``get``.
"""

from __future__ import annotations

import os
from collections import UserDict
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata", "dataset_root"]


def dataset_root() -> str:
    """Root folder of all datasets: ``$REID_DATASETS`` or ``datasets/``."""
    return os.path.expanduser(os.environ.get("REID_DATASETS", "datasets"))


class _DatasetCatalog(UserDict):
    """Global name -> function mapping (singleton :data:`DatasetCatalog`)."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: Dict[Tuple[str, str], Tuple[Callable, List[Dict[str, Any]]]] = {}

    def register(self, name: str, func: Callable[[], List[Dict[str, Any]]]) -> None:
        """Register ``func`` (returning ``list[dict]``) under ``name``.

        Raises:
            ValueError: ``func`` is not callable or ``name`` is already registered.
        """
        if not callable(func):
            raise ValueError(f"DatasetCatalog.register('{name}', ...) needs a callable")
        if name in self:
            raise ValueError(f"Dataset '{name}' is already registered")
        self[name] = func

    def get(self, name: str) -> List[Dict[str, Any]]:  # type: ignore[override]
        """The records of the function registered as ``name``.

        The function runs once per name and ``$REID_DATASETS``; later calls return new
        record dicts (shallow copies) of the cached result, so callers may add keys freely.
        :meth:`clear_cache` forgets the results (e.g. after rewriting a dataset on disk).

        Raises:
            KeyError: ``name`` is not registered (the message lists the registered names).
        """
        try:
            func = self[name]
        except KeyError as e:
            raise KeyError(
                f"Dataset '{name}' is not registered. Registered datasets: {', '.join(sorted(self))}"
            ) from e
        key = (name, os.environ.get("REID_DATASETS", ""))
        cached = self._cache.get(key)
        if cached is None or cached[0] is not func:
            cached = self._cache[key] = (func, func())
        return [dict(r) if isinstance(r, dict) else r for r in cached[1]]

    def clear_cache(self) -> None:
        """Forget the loaded records (the next :meth:`get` calls the functions again)."""
        self._cache.clear()

    def list(self) -> List[str]:
        """Registered names."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        """Unregister ``name`` (and forget its cached records)."""
        self.pop(name)
        for key in [k for k in self._cache if k[0] == name]:
            del self._cache[key]


DatasetCatalog = _DatasetCatalog()


class Metadata(dict):
    """Dict with attribute access; ``name`` is set by :data:`MetadataCatalog`."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(
                f"Metadata of '{self.get('name', '?')}' has no field '{key}'; "
                f"available: {sorted(self)}"
            ) from e

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def set(self, **kwargs: Any) -> "Metadata":
        """Set several fields at once; returns self."""
        self.update(kwargs)
        return self


class _MetadataCatalog(UserDict):
    """Global name -> :class:`Metadata` mapping (created on first access)."""

    def get(self, name: str) -> Metadata:  # type: ignore[override]
        """Metadata of ``name`` (created empty if needed)."""
        if name not in self:
            self[name] = Metadata(name=name)
        return self[name]

    def remove(self, name: str) -> None:
        self.pop(name, None)


MetadataCatalog = _MetadataCatalog()

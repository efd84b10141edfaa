"""Fixtures shared by the data tests (request them by name)."""

from typing import Any, Callable, List, Optional

import pytest

from reid_plugins.data.datasets.scene_common import mat_elements, mat_field, mat_string


def _mat_strings(array: Any, field: Optional[str] = None) -> List[str]:
    """The strings of a MATLAB cell array, or of the field ``field`` of every element of a
    struct array (any nesting, as loaded by :func:`scipy.io.loadmat`)."""
    return [
        mat_string(e if field is None else mat_field(e, field, f"mat_strings({field!r})"))
        for e in mat_elements(array)
    ]


@pytest.fixture
def mat_strings() -> Callable[..., List[str]]:
    """``mat_strings(array, field=None)``: strings of a loaded MATLAB cell / struct array."""
    return _mat_strings

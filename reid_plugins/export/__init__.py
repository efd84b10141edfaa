"""Model export (ONNX): re-ID feature extractors (:mod:`.onnx`) and the one-step
person-search models TDN / OIM* (:mod:`.person_search`)."""

from .onnx import (  # noqa: F401
    EXPORT_WRAPPERS,
    CropFeatureWrapper,
    ReIDBaselineExportWrapper,
    build_export_wrapper,
    export_onnx,
    register_export_wrapper,
    verify_onnx,
)
from .person_search import (  # noqa: F401
    export_person_search,
    is_person_search,
    run_tdn_onnx,
    verify_person_search,
)

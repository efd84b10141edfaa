"""Model export (ONNX) of re-ID feature extractors."""

from .onnx import (  # noqa: F401
    EXPORT_WRAPPERS,
    CropFeatureWrapper,
    ReIDBaselineExportWrapper,
    build_export_wrapper,
    export_onnx,
    register_export_wrapper,
    verify_onnx,
)

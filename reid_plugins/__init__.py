"""reid_plugins: person re-identification and person search on detectron2's API."""

import warnings as _warnings

__version__ = "0.1.0"

# fvcore.nn scripts its focal losses with ``torch.jit.script`` at import, which torch >= 2.5
# deprecates with a FutureWarning printed by every command. Only that message is silenced.
_warnings.filterwarnings(
    "ignore",
    message=r"`torch\.jit\.script` is deprecated",
    category=FutureWarning,
    module=r"torch\.jit\._script",
)

"""reid_plugins: person re-identification and person search on detectron2's API."""

__version__ = "0.1.0"

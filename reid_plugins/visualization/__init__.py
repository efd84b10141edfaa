"""Pictures people would rather see than read: ranked lists, detections, feature plots.

:mod:`.visualizer` is the public entry point (``from reid_plugins.visualization import
visualizer as vis``); it sits above ``data`` and ``evaluation`` in the package layering.
"""

"""Register the built-in ReID datasets in :data:`DatasetCatalog` (on import).

Every entry is lazy: the datasets root (``$REID_DATASETS``, default ``datasets/``) is
resolved when ``DatasetCatalog.get(name)`` runs, which also fills
``MetadataCatalog.get(name)`` (``num_pids``, ``num_images``, ``num_cams``; test sets also
``num_query``, ``num_gallery``, ``num_query_pids``, ``num_gallery_pids``,
``num_distractors``; plus ``root``, ``statistics``, ``evaluator_type``, ``distractor_pid``)
and logs the statistics table.

Names: ``market1501_{train,test,combined_train}``, ``dukemtmc_{train,test,combined_train}``,
``cuhk03_{train,test}`` (old protocol), ``cuhk03_np_{detected,labeled}_{train,test,
combined_train}``, ``msmt17_{v1,v2}_{train,test,combined_train}``, ``cuhk_sysu_reid_train``,
``synthetic_reid_<domain>_{train,test}`` for ``synA``..``synD``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Sequence, Tuple

from ..synthetic_reid import DEFAULT_DOMAINS
from .common import DISTRACTOR_PID, register_reid_split, require_path
from .cuhk03 import CUHK03_DIR, load_cuhk03, load_cuhk03_np
from .cuhk_sysu_reid import cuhk_sysu_reid_loader
from .dukemtmc import DUKEMTMC_DIR
from .market1501 import MARKET1501_DIR, load_market_style, register_market_style
from .msmt17 import msmt17_loader

__all__ = ["register_all_reid", "register_synthetic_reid"]

logger = logging.getLogger(__name__)

Loaded = Tuple[List[Dict[str, Any]], Dict[str, Any]]


def _cuhk03_loader(split: str, name: str):
    def load(root: str) -> Loaded:
        recs = load_cuhk03(root, split, dataset_name=name)
        return recs, {
            "root": os.path.abspath(os.path.join(root, CUHK03_DIR)),
            "distractor_pid": None,
            "protocol": "old (cuhk-03.mat split 0, labeled + detected)",
        }

    return load


def _cuhk03_np_loader(subset: str, split: str, name: str):
    def load(root: str) -> Loaded:
        recs, layout = load_cuhk03_np(root, split, subset, name)
        market = layout.startswith("Market")
        return recs, {
            "root": os.path.abspath(os.path.join(root, CUHK03_DIR)),
            "distractor_pid": DISTRACTOR_PID if market else None,
            "subset": subset,
            "layout": layout,
        }

    return load


def _synthetic_loader(domain: str, split: str, name: str):
    def load(root: str) -> Loaded:
        data_dir = os.path.join(root, "synthetic_reid", domain)
        if not os.path.exists(data_dir):
            # Built-in benchmark: generate it (deterministic, cached) on first use.
            from ..synthetic_reid import generate_synthetic_reid

            logger.info("Synthetic ReID data not found under %s: generating it", root)
            generate_synthetic_reid(root)
        require_path(
            data_dir,
            f"Synthetic ReID domain '{domain}'",
            hint=f"Generate it with: python tools/generate_synthetic_reid.py --root {root}",
        )
        recs = load_market_style(data_dir, split, dataset_name=name, what=f"synthetic {domain}")
        return recs, {"root": os.path.abspath(data_dir), "distractor_pid": DISTRACTOR_PID}

    return load


def register_synthetic_reid(domains: Sequence[str] = DEFAULT_DOMAINS) -> List[str]:
    """Register ``synthetic_reid_<domain>_train`` / ``_test`` (Market loader) per domain.

    The data is made by :func:`reid_plugins.data.synthetic_reid.generate_synthetic_reid`
    under ``$REID_DATASETS/synthetic_reid/<domain>``. Returns the registered names.
    """
    names = []
    for d in domains:
        for split in ("train", "test"):
            name = f"synthetic_reid_{d}_{split}"
            names.append(register_reid_split(name, _synthetic_loader(d, split, name)))
    return names


def register_all_reid() -> None:
    """Register every built-in ReID dataset (called once on import of this package)."""
    register_market_style(
        "market1501", MARKET1501_DIR, combined=True, max_cam=6, what="Market-1501"
    )
    register_market_style("dukemtmc", DUKEMTMC_DIR, combined=True, max_cam=8, what="DukeMTMC")
    for split in ("train", "test"):
        register_reid_split(f"cuhk03_{split}", _cuhk03_loader(split, f"cuhk03_{split}"))
    for subset in ("detected", "labeled"):
        for split in ("train", "test", "combined"):
            name = f"cuhk03_np_{subset}_{split}" + ("_train" if split == "combined" else "")
            register_reid_split(name, _cuhk03_np_loader(subset, split, name))
    for version in ("v1", "v2"):
        for split in ("train", "test", "combined"):
            name = f"msmt17_{version}_{split}" + ("_train" if split == "combined" else "")
            register_reid_split(name, msmt17_loader(version, split, name))
    register_reid_split("cuhk_sysu_reid_train", cuhk_sysu_reid_loader("cuhk_sysu_reid_train"))
    register_synthetic_reid()


register_all_reid()

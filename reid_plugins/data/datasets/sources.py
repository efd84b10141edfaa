"""What every registered dataset needs on disk, and where to get it.

:func:`dataset_source` maps a registered name (``market1501_train``, ``prw_query``, ...) to a
:class:`DatasetSource`: its ``datasets/README.md`` section, the files and folders it needs
under ``$REID_DATASETS`` (:meth:`DatasetSource.requirements`) and where the data comes from.
``tools/check_dataset.py NAME`` lists the missing ones with this text; the registered loaders
name the section in their one-line errors (:func:`.errors.dataset_error`).

A requirement is a tuple of alternatives (paths relative to the datasets root): it is met
when any of them exists (e.g. CUHK03-NP as Market-style folders *or* as ``.mat`` configs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["DatasetSource", "Requirement", "dataset_source", "missing_requirements", "SOURCES"]

#: ``(alternatives, description)``; alternatives are paths relative to ``$REID_DATASETS``
#: (a trailing ``/`` marks a folder).
Requirement = Tuple[Tuple[str, ...], str]


@dataclass(frozen=True)
class DatasetSource:
    """One dataset family.

    Attributes:
        pattern: regex matched (``fullmatch``) against registered names.
        title: the ``datasets/README.md`` section.
        get: where to get the data (official source, by name).
        needs: ``fn(name) -> [Requirement, ...]`` for a registered name of the family.
        generated: the data is generated (or derived) on first use, nothing to download.
    """

    pattern: str
    title: str
    get: str
    needs: Callable[[str], List[Requirement]] = field(default=lambda name: [])
    generated: bool = False

    def requirements(self, name: str) -> List[Requirement]:
        return list(self.needs(name))


def _folders(base: str, names: Sequence[str], what: str) -> List[Requirement]:
    return [((f"{base}/{n}/",), f"{what} {n} folder") for n in names]


def _market_like(base: str, what: str) -> Callable[[str], List[Requirement]]:
    def needs(name: str) -> List[Requirement]:
        folders = ["bounding_box_train"] if name.endswith("_train") else []
        if not name.endswith("_train") or name.endswith("_combined_train"):
            folders += ["bounding_box_test", "query"]
        return _folders(base, folders, what)

    return needs


def _cuhk03_old(name: str) -> List[Requirement]:
    return [
        (
            ("cuhk03/cuhk03_release/cuhk-03.mat", "cuhk03/images_extracted/.labeled_done"),
            "CUHK03 release (cuhk-03.mat, MATLAB v7.3; h5py reads it)",
        )
    ]


def _cuhk03_np(name: str) -> List[Requirement]:
    subset = "labeled" if "_labeled_" in name else "detected"
    # with the .mat config the loader also needs cuhk-03.mat (it names it when missing)
    alts = (
        f"cuhk03/cuhk03-np/{subset}/bounding_box_train/",
        f"cuhk03-np/{subset}/bounding_box_train/",
        f"cuhk03/cuhk03_new_protocol_config_{subset}.mat",
    )
    return [(alts, f"CUHK03-NP {subset}: Market-style folders or the new-protocol config")]


def _msmt17(name: str) -> List[Requirement]:
    version = "V1" if "_v1_" in name else "V2"
    base = f"msmt17/MSMT17_{version}"
    train_dir, test_dir = (
        ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    )
    out: List[Requirement] = []
    if name.endswith("_train"):
        out += [((f"{base}/{train_dir}/",), f"MSMT17_{version} train images")]
        out += [
            ((f"{base}/list_{s}.txt",), f"MSMT17_{version} list file") for s in ("train", "val")
        ]
    if not name.endswith("_train") or name.endswith("_combined_train"):
        out += [((f"{base}/{test_dir}/",), f"MSMT17_{version} test images")]
        out += [
            ((f"{base}/list_{s}.txt",), f"MSMT17_{version} list file") for s in ("query", "gallery")
        ]
    return out


def _cuhk_sysu(name: str) -> List[Requirement]:
    anno = "cuhk_sysu/annotation"
    out = [
        (("cuhk_sysu/Image/SSM/",), "CUHK-SYSU scene images"),
        ((f"{anno}/Images.mat",), "CUHK-SYSU boxes of every image"),
        ((f"{anno}/pool.mat",), "CUHK-SYSU test image list"),
    ]
    if name.endswith("_train"):
        out.append(((f"{anno}/test/train_test/Train.mat",), "CUHK-SYSU training identities"))
    else:
        out.append(((f"{anno}/test/train_test/TestG50.mat",), "CUHK-SYSU test protocol"))
    return out


def _cuhk_sysu_reid(name: str) -> List[Requirement]:
    return [
        (("cuhk_sysu/Image/SSM/", "cuhk_sysu/reid_crops/.done"), "CUHK-SYSU scene images"),
        (
            ("cuhk_sysu/annotation/test/train_test/Train.mat", "cuhk_sysu/reid_crops/.done"),
            "CUHK-SYSU training identities",
        ),
    ]


def _prw(name: str) -> List[Requirement]:
    out = [
        (("prw/frames/",), "PRW frames"),
        (("prw/annotations/",), "PRW per-frame boxes (<frame>.jpg.mat)"),
    ]
    if name.endswith("_train"):
        out.append((("prw/frame_train.mat",), "PRW train frame list"))
    elif name.endswith("_gallery"):
        out.append((("prw/frame_test.mat",), "PRW test frame list"))
    else:
        out.append((("prw/query_info.txt",), "PRW query list"))
    return out


def _scene_crops(name: str) -> List[Requirement]:
    prefix = re.sub(r"_crops_(train|test)$", "", name)
    if prefix.startswith("synthetic_"):
        return []
    inner = dataset_source(f"{prefix}_train")
    splits = ["train"] if name.endswith("_train") else ["gallery", "query"]
    needs = [r for sp in splits for r in inner.requirements(f"{prefix}_{sp}")] if inner else []
    # met when the crops were already built
    done = f"{prefix}_crops/manifest.json"
    return [(alts + (done,), what) for alts, what in dict.fromkeys(needs)]


_SCENE_GEN = (
    "generated on first use (deterministic, cached): python tools/generate_synthetic_scenes.py "
    "--root $REID_DATASETS --format {fmt}"
)

#: Every registered dataset family, most specific pattern first.
SOURCES: Tuple[DatasetSource, ...] = (
    DatasetSource(
        r"(cuhk_sysu|prw|synthetic_cuhk_sysu|synthetic_prw)_crops_(train|test)",
        "Person crops of the scene datasets",
        "cut from the registered scene dataset on first use (tools/build_person_crops.py); "
        "get the scene dataset itself (CUHK-SYSU or PRW) first",
        _scene_crops,
        generated=True,
    ),
    DatasetSource(
        r"market1501_(train|test|combined_train)",
        "Market-1501",
        "Market-1501 (Zheng et al., 'Scalable Person Re-identification: A Benchmark', ICCV "
        "2015): the archive Market-1501-v15.09.15.zip from the dataset authors' release page",
        _market_like("market1501/Market-1501-v15.09.15", "Market-1501"),
    ),
    DatasetSource(
        r"dukemtmc_(train|test|combined_train)",
        "DukeMTMC-reID",
        "DukeMTMC-reID (Zheng et al., 'Unlabeled Samples Generated by GAN Improve the Person "
        "Re-identification Baseline in vitro', ICCV 2017; from the DukeMTMC videos of Ristani "
        "et al., ECCVW 2016). The DukeMTMC data was withdrawn by its creators in 2019: use "
        "only a copy you are entitled to use",
        _market_like("dukemtmc/DukeMTMC-reID", "DukeMTMC-reID"),
    ),
    DatasetSource(
        r"cuhk03_np_(detected|labeled)_(train|test|combined_train)",
        "CUHK03",
        "the CUHK03 release (cuhk-03.mat; Li et al., 'DeepReID', CVPR 2014, from the CUHK "
        "authors on request) plus the new-protocol split files "
        "cuhk03_new_protocol_config_{detected,labeled}.mat (Zhong et al., 'Re-ranking Person "
        "Re-identification with k-reciprocal Encoding', CVPR 2017, released with their "
        "person-re-ranking code), or the Market-style cuhk03-np folders released by the same "
        "authors",
        _cuhk03_np,
    ),
    DatasetSource(
        r"cuhk03_(train|test)",
        "CUHK03",
        "the CUHK03 release cuhk-03.mat (Li et al., 'DeepReID: Deep Filter Pairing Neural "
        "Network for Person Re-identification', CVPR 2014), from the CUHK authors on request",
        _cuhk03_old,
    ),
    DatasetSource(
        r"msmt17_(v1|v2)_(train|test|combined_train)",
        "MSMT17",
        "MSMT17 (Wei et al., 'Person Transfer GAN to Bridge Domain Gap for Person "
        "Re-Identification', CVPR 2018): MSMT17_V1 or MSMT17_V2 from the authors on request "
        "(signed agreement)",
        _msmt17,
    ),
    DatasetSource(
        r"cuhk_sysu_reid_train",
        "CUHK-SYSU as ReID",
        "the CUHK-SYSU person-search dataset (see CUHK-SYSU); the crops are cut on first use",
        _cuhk_sysu_reid,
    ),
    DatasetSource(
        r"cuhk_sysu_(train|gallery|query)",
        "CUHK-SYSU",
        "CUHK-SYSU (Xiao et al., 'Joint Detection and Identification Feature Learning for "
        "Person Search', CVPR 2017): the dataset archive linked from the authors' "
        "person_search code release (images Image/SSM plus annotation/)",
        _cuhk_sysu,
    ),
    DatasetSource(
        r"prw_(train|gallery|query)",
        "PRW",
        "PRW (Zheng et al., 'Person Re-identification in the Wild', CVPR 2017): the archive "
        "PRW-v16.04.20 from the dataset authors' release page",
        _prw,
    ),
    DatasetSource(
        r"synthetic_reid_\w+_(train|test)",
        "Synthetic multi-domain ReID benchmark",
        "generated on first use (deterministic, cached): python tools/generate_synthetic_reid.py "
        "--root $REID_DATASETS",
        generated=True,
    ),
    DatasetSource(
        r"synthetic_cuhk_sysu_(train|gallery|query)",
        "Synthetic person-search scenes",
        _SCENE_GEN.format(fmt="cuhk_sysu"),
        generated=True,
    ),
    DatasetSource(
        r"synthetic_prw_(train|gallery|query)",
        "Synthetic person-search scenes",
        _SCENE_GEN.format(fmt="prw"),
        generated=True,
    ),
)


def dataset_source(name: str) -> Optional[DatasetSource]:
    """The :class:`DatasetSource` of a registered name, or None (e.g. user-registered)."""
    for s in SOURCES:
        if re.fullmatch(s.pattern, name):
            return s
    return None


def _exists(root: str, rel: str) -> bool:
    path = os.path.join(root, rel)
    return os.path.isdir(path) if rel.endswith("/") else os.path.isfile(path)


def missing_requirements(name: str, root: str) -> List[Tuple[str, str]]:
    """``[(expected absolute path(s), description), ...]`` of the unmet requirements of
    ``name`` under the datasets root ``root`` (alternatives joined by ``" or "``; markers of
    derived caches are not named)."""
    source = dataset_source(name)
    if source is None:
        return []
    out = []
    for alts, what in source.requirements(name):
        if not any(_exists(root, a) for a in alts):
            shown = [a for a in alts if not _is_cache(a)] or list(alts)
            paths = [os.path.abspath(os.path.join(root, a)) for a in shown]
            out.append((" or ".join(paths), what))
    return out


def _is_cache(rel: str) -> bool:
    """Markers of data derived on first use (extracted images, crops): they satisfy a
    requirement but are not what a user downloads."""
    base = os.path.basename(rel)
    return base.startswith(".") or base == "manifest.json"

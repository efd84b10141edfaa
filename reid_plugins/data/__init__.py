"""Datasets, catalogs, transforms, samplers and loaders."""

from .build import (  # noqa: F401
    ReIDTrainLoader,
    TrainLoader,
    build_feature_extraction_loader,
    build_reid_test_loader,
    build_reid_train_loader,
    get_reid_train_records,
    get_train_pids_per_domain,
    infer_num_classes,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog, dataset_root  # noqa: F401
from .detection_utils import ImageReadError, read_image  # noqa: F401
from .mapper import ReIDDatasetMapper  # noqa: F401
from .samplers import InferenceSampler, RandomIdentitySampler, TrainingSampler  # noqa: F401
from .scene_build import build_scene_test_loader, build_scene_train_loader  # noqa: F401
from .transforms import ReIDTransforms, build_reid_transforms  # noqa: F401

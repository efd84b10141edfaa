"""``PersonSearchTrainer``: :class:`DefaultTrainer` for one-step person search.

Select it with ``TRAINER.NAME: PersonSearchTrainer``. It swaps the ReID data and evaluation
for scene data:

* training loader: :func:`~reid_plugins.data.scene_build.build_scene_train_loader`
  (infinite, shuffled, exactly resumable through ``set_start_iter``);
* ``DATASETS.TEST`` entries name a person-search test set by its gallery or query split
  (``cuhk_sysu_gallery`` / ``prw_query`` ...); for each, :meth:`PersonSearchTrainer.test`
  runs the gallery pass once (``model(inputs)``) and the query pass
  (``model.extract_query(inputs)``) through
  :func:`~reid_plugins.evaluation.person_search_evaluation.run_person_search_inference` and
  returns the :class:`~reid_plugins.evaluation.PersonSearchEvaluator` results
  ``{"search": {...}, "detection": {...}, ...}`` (``{name: results}`` for several sets).
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional

from .defaults import TRAINER_REGISTRY, DefaultTrainer

__all__ = ["PersonSearchTrainer"]

logger = logging.getLogger(__name__)


@TRAINER_REGISTRY.register()
class PersonSearchTrainer(DefaultTrainer):
    """Trainer for scene-level person search models (e.g. ``OIMSearch``).

    Overrides the data and evaluation builders of :class:`DefaultTrainer`; optimisation,
    hooks, checkpointing and exact resume are inherited.
    """

    @classmethod
    def build_train_loader(cls, cfg):
        """:func:`~reid_plugins.data.scene_build.build_scene_train_loader`."""
        from ..data.scene_build import build_scene_train_loader

        return build_scene_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Gallery loader of the test set named by ``dataset_name`` (gallery or query split)."""
        from ..data.scene_build import build_scene_test_loader, search_dataset_pair

        gallery, _ = search_dataset_pair(dataset_name)
        return build_scene_test_loader(cfg, gallery)

    @classmethod
    def build_query_loader(cls, cfg, dataset_name: str, queries=None):
        """Query loader of the test set, aligned with the evaluator's ``queries``."""
        from ..data.scene_build import build_scene_query_loader, search_dataset_pair

        _, query = search_dataset_pair(dataset_name)
        return build_scene_query_loader(cfg, query, queries)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        """:meth:`PersonSearchEvaluator.from_config` for the gallery/query pair of
        ``dataset_name``; ``TEST.SEARCH.PROTOCOL`` (if set) forces the protocol."""
        from ..data import datasets  # noqa: F401  (registers the built-in sets)
        from ..data.catalog import MetadataCatalog
        from ..data.scene_build import search_dataset_pair
        from ..evaluation.person_search_evaluation import PersonSearchEvaluator

        gallery, query = search_dataset_pair(dataset_name)
        protocol = cfg.TEST.SEARCH.PROTOCOL
        if protocol:
            if protocol not in ("cuhk_sysu", "prw"):
                raise ValueError(
                    f"TEST.SEARCH.PROTOCOL must be '', 'cuhk_sysu' or 'prw', got '{protocol}'"
                )
            MetadataCatalog.get(gallery).set(search_protocol=protocol)
        return PersonSearchEvaluator.from_config(cfg, gallery, query, output_dir=output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None) -> Dict:
        """Person search on every ``DATASETS.TEST`` set: one gallery pass + the query pass.

        Returns:
            the evaluator's results (``{"search": {...}, "detection": {...}, ...}``) for a
            single set, else ``{name: results}``; also written to
            ``OUTPUT_DIR/eval_results.json``.
        """
        from ..evaluation.person_search_evaluation import run_person_search_inference

        def evaluate(name: str, evaluator) -> Dict:
            gallery_loader = cls.build_test_loader(cfg, name)
            if evaluator is None:
                out = os.path.join(cfg.OUTPUT_DIR, "inference", name) if cfg.OUTPUT_DIR else None
                evaluator = cls.build_evaluator(cfg, name, out)
            query_loader = cls.build_query_loader(cfg, name, evaluator.queries)
            return run_person_search_inference(model, gallery_loader, query_loader, evaluator)

        return cls.evaluate_test_sets(cfg, evaluators, evaluate, "Person search", logger)

"""The built-in methods, one subpackage each; importing this package registers them.

======  ==============================================================  =====================
name    what                                                            registers
======  ==============================================================  =====================
m3l     M3L, memory-based multi-source meta-learning (CVPR 2021)         ``M3L``, ``MetaTrainer``
gmn     GMN, generalizable metric network (arXiv 2306.11991)              ``GMN``, ``GMNTrainer``
oim     OIM*, one-step person search baseline (CVPR 2017 / TDN's OIM*)    ``OIMSearch``
tdn     TDN, teacher-guided disentangling networks (IEEE TMM)             ``TDN``, ``TDNTrainer``
======  ==============================================================  =====================

Each subpackage holds the method's config adder (``config.py``), model (``model.py``), the
heads/losses only it uses, and its trainer/hooks (``trainer.py``). The core packages
(config, data, engine, evaluation, modeling, solver, checkpoint, utils) never import this
package; see ``docs/architecture.md``.
"""

from . import gmn, m3l, oim, tdn  # noqa: F401  (registration)

__all__ = ["gmn", "m3l", "oim", "tdn"]

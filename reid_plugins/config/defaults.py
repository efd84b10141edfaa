"""Documented default configuration shared by every method.

Method-specific options live in their own subtree and are added by
``add_<method>_config(cfg)`` (e.g. :func:`reid_plugins.methods.m3l.config.add_m3l_config`).
Keys are detectron2's where detectron2 has one.
"""

from .config import CfgNode as CN

_C = CN()
# Version of the config layout, bumped on incompatible changes.
_C.VERSION = 1

# ----------------------------------------------------------------------------- #
# Model
# ----------------------------------------------------------------------------- #
_C.MODEL = CN()
# Name of a class registered in META_ARCH_REGISTRY.
_C.MODEL.META_ARCHITECTURE = "ReIDBaseline"
# "auto" = cuda when available, else cpu; or an explicit torch device string.
_C.MODEL.DEVICE = "auto"
# Checkpoint (or weight file) loaded by `resume_or_load`/`--eval-only`; "" = none.
_C.MODEL.WEIGHTS = ""
# Per-channel pixel mean/std in the 0-255 range, RGB order (ImageNet statistics).
# Images reach the model as float tensors in 0-255; the model normalises them.
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
# Channels-last memory format for the model's 4-D weights (and hence its convolutions):
# True, False, or None / "auto" = on exactly when the run uses mixed precision (SOLVER.AMP
# for training, TEST.AMP for --eval-only), where oneDNN's / cuDNN's fast kernels want it.
_C.MODEL.CHANNELS_LAST = None

_C.MODEL.BACKBONE = CN()
# Name of a function/class registered in BACKBONE_REGISTRY, called as fn(cfg, input_shape).
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# ResNet depth: 18, 34, 50 or 101.
_C.MODEL.BACKBONE.DEPTH = 50
# Use IBN-Net-a blocks (instance norm on half the channels of the first conv of each
# bottleneck in stages res2..res4).
_C.MODEL.BACKBONE.WITH_IBN = False
# Stride of the first block of res5 (1 = "last stride 1", the ReID standard).
_C.MODEL.BACKBONE.LAST_STRIDE = 1
# Channels of the stem / first stage (64 for standard ResNets; smaller values give tiny
# networks for tests and synthetic runs; all stages scale proportionally).
_C.MODEL.BACKBONE.BASE_WIDTH = 64
# Freeze the stem (1) and the first N-1 stages (2..5); 0 = train everything.
_C.MODEL.BACKBONE.FREEZE_AT = 0
# Stage outputs returned by the backbone, named res2..res5.
_C.MODEL.BACKBONE.OUT_FEATURES = ["res5"]
# Local path to ImageNet weights (torchvision / IBN-Net state dict); "" = random init.
_C.MODEL.BACKBONE.PRETRAIN_PATH = ""
# Train the backbone from random weights on purpose. False: training refuses to start when
# PRETRAIN_PATH and MODEL.WEIGHTS are both empty (the papers start from ImageNet); True:
# synthetic benchmarks and tests. Evaluation is not affected.
_C.MODEL.BACKBONE.FROM_SCRATCH = False
# Normalisation layer: "BN", "SyncBN" (DDP) or "FrozenBN".
_C.MODEL.BACKBONE.NORM = "BN"
# ReLU after the stem's norm layer (False = the stem of M3L's released ResNet / IBN-Net code,
# which has conv1 -> bn1 -> max-pool; the M3L configs set it).
_C.MODEL.BACKBONE.STEM_RELU = True

_C.MODEL.HEADS = CN()
# Name of a head registered in REID_HEADS_REGISTRY.
_C.MODEL.HEADS.NAME = "EmbeddingHead"
# Global pooling: "avg", "max" or "gem".
_C.MODEL.HEADS.POOL = "avg"
# Neck: "bnneck" (GAP -> BN, bias frozen) or "none".
_C.MODEL.HEADS.NECK = "bnneck"
# Split the BNNeck batch into groups of this many samples (ghost BN); 0 = whole batch.
_C.MODEL.HEADS.BN_SPLIT = 0
# Number of training identities; 0 = inferred from the training set.
_C.MODEL.HEADS.NUM_CLASSES = 0
# Identity classifier: "linear" (FC without bias) or "none".
_C.MODEL.HEADS.CLS_LAYER = "linear"

_C.MODEL.LOSSES = CN()
# Cross-entropy on the post-BN feature.
_C.MODEL.LOSSES.CE = CN()
_C.MODEL.LOSSES.CE.ENABLED = True
_C.MODEL.LOSSES.CE.WEIGHT = 1.0
# Label smoothing epsilon (0 = plain cross-entropy).
_C.MODEL.LOSSES.CE.EPSILON = 0.1
# Batch-hard triplet loss on the pre-BN feature (Euclidean).
_C.MODEL.LOSSES.TRIPLET = CN()
_C.MODEL.LOSSES.TRIPLET.ENABLED = True
_C.MODEL.LOSSES.TRIPLET.WEIGHT = 1.0
_C.MODEL.LOSSES.TRIPLET.MARGIN = 0.3
# L2-normalise features before computing distances.
_C.MODEL.LOSSES.TRIPLET.NORM_FEAT = False
# Memory-based identification loss (per-domain identity-centroid memories, M3L Eq. 2-3).
_C.MODEL.LOSSES.MEMORY = CN()
_C.MODEL.LOSSES.MEMORY.ENABLED = False
_C.MODEL.LOSSES.MEMORY.WEIGHT = 1.0
# Softmax temperature tau.
_C.MODEL.LOSSES.MEMORY.TEMP = 0.05
# Momentum m of the centroid update M <- m*M + (1-m)*mean(f).
_C.MODEL.LOSSES.MEMORY.MOMENTUM = 0.2
# Online Instance Matching loss (Xiao et al. 2017; TDN's "OIM*" person-search baseline):
# labelled lookup table + circular queue of unlabelled persons.
_C.MODEL.LOSSES.OIM = CN()
# Compute the OIM loss (person-search OIM* baseline only).
_C.MODEL.LOSSES.OIM.ENABLED = False
# Multiplier of the OIM loss in the total loss.
_C.MODEL.LOSSES.OIM.WEIGHT = 1.0
# Lookup-table size = number of labelled training identities; 0 = from the training set.
_C.MODEL.LOSSES.OIM.NUM_PIDS = 0
# Circular-queue size for unlabelled persons (OIM paper: 5000 CUHK-SYSU, 500 PRW).
_C.MODEL.LOSSES.OIM.QUEUE_SIZE = 5000
# Momentum gamma of the lookup-table update v <- gamma*v + (1-gamma)*x.
_C.MODEL.LOSSES.OIM.MOMENTUM = 0.5
# Softmax temperature; logits are cosine similarities times 1/TEMP (1/30 -> scalar 30).
_C.MODEL.LOSSES.OIM.TEMP = 1.0 / 30

# ----------------------------------------------------------------------------- #
# Input
# ----------------------------------------------------------------------------- #
_C.INPUT = CN()
# ReID crops: (height, width).
_C.INPUT.SIZE_TRAIN = [256, 128]
_C.INPUT.SIZE_TEST = [256, 128]
_C.INPUT.FLIP = CN()
_C.INPUT.FLIP.ENABLED = True
_C.INPUT.FLIP.PROB = 0.5
# Pad by PADDING pixels then random-crop back to SIZE_TRAIN.
_C.INPUT.PADDING = CN()
_C.INPUT.PADDING.ENABLED = True
_C.INPUT.PADDING.SIZE = 10
# Border mode of the padding: "constant" (zeros), "edge", "reflect" or "symmetric".
_C.INPUT.PADDING.MODE = "constant"
# Random erasing.
_C.INPUT.REA = CN()
_C.INPUT.REA.ENABLED = False
_C.INPUT.REA.PROB = 0.5
# Range of the erased area (fraction of the image) and of its aspect ratio; erased pixels
# are filled with MODEL.PIXEL_MEAN (i.e. 0 after the model's normalisation).
_C.INPUT.REA.SCALE = [0.02, 0.4]
_C.INPUT.REA.RATIO = [0.3, 3.3]
# Scenes (person search): resize so the shorter side is MIN_SIZE unless the longer side
# would exceed MAX_SIZE.
_C.INPUT.MIN_SIZE_TRAIN = 600
_C.INPUT.MAX_SIZE_TRAIN = 1000
_C.INPUT.MIN_SIZE_TEST = 600
_C.INPUT.MAX_SIZE_TEST = 1000

# ----------------------------------------------------------------------------- #
# Datasets
# ----------------------------------------------------------------------------- #
_C.DATASETS = CN()
# Names registered in DatasetCatalog. Several training names = multi-source training
# (each keeps its domain index and relabelled pids).
_C.DATASETS.TRAIN = []
# Evaluation sets (each yields query + gallery records).
_C.DATASETS.TEST = []

# ----------------------------------------------------------------------------- #
# Data loader
# ----------------------------------------------------------------------------- #
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
# "RandomIdentitySampler" (P x K) or "TrainingSampler" (shuffled, infinite).
_C.DATALOADER.SAMPLER_TRAIN = "RandomIdentitySampler"
# K, instances per identity in a P x K batch.
_C.DATALOADER.NUM_INSTANCE = 4
# Multi-source training: one batch of SOLVER.IMS_PER_BATCH per domain each iteration.
_C.DATALOADER.MULTI_SOURCE = False
# Unreadable images: False = raise naming the file; True = skip with a warning.
_C.DATALOADER.SKIP_CORRUPT = False

# ----------------------------------------------------------------------------- #
# Solver
# ----------------------------------------------------------------------------- #
_C.SOLVER = CN()
# "SGD" or "Adam".
_C.SOLVER.OPTIMIZER = "Adam"
_C.SOLVER.BASE_LR = 3.5e-4
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 5e-4
# Weight decay of normalisation layers' parameters (None-like -1 = same as WEIGHT_DECAY).
_C.SOLVER.WEIGHT_DECAY_NORM = 5e-4
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.MAX_ITER = 12000
# "WarmupMultiStepLR" or "WarmupCosineLR".
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
# Iterations at which the LR is multiplied by GAMMA.
_C.SOLVER.STEPS = [6000, 10000]
_C.SOLVER.GAMMA = 0.1
# Linear warm-up from BASE_LR * WARMUP_FACTOR over WARMUP_ITERS iterations.
_C.SOLVER.WARMUP_FACTOR = 0.1
_C.SOLVER.WARMUP_ITERS = 2000
# "linear" or "constant".
_C.SOLVER.WARMUP_METHOD = "linear"
# Images per batch (per domain for multi-source training), summed over all processes.
_C.SOLVER.IMS_PER_BATCH = 64
# Iterations per "epoch" for schedules written in epochs; 0 = len(train set) // batch.
_C.SOLVER.ITERS_PER_EPOCH = 0
_C.SOLVER.CHECKPOINT_PERIOD = 2000
# Gradient clipping.
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
# "value" or "norm".
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
# Automatic mixed precision (AMPTrainer): forward under torch.autocast, float16 losses scaled
# by a GradScaler. True, False, or None / "auto" (the default fast path): float16 on CUDA,
# bfloat16 on CPUs with native bfloat16 (AVX512-BF16 / AMX), float32 elsewhere and for
# TRAINER.NAME MetaTrainer (M3L's second-order update runs in float32; True is an error there).
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = None
# "auto" (float16 on CUDA, bfloat16 on CPU), "float16" or "bfloat16".
_C.SOLVER.AMP.DTYPE = "auto"
# Optimizer implementation: True = torch's fused kernel where it has one for the parameters'
# device (CUDA, CPU), else its foreach (multi-tensor) one; False = torch's default.
_C.SOLVER.FUSED = True
# Compile the training model with torch.compile (first iterations are slow while it compiles;
# pays off on long runs). Evaluation runs the uncompiled module.
_C.SOLVER.COMPILE = False

# ----------------------------------------------------------------------------- #
# Test
# ----------------------------------------------------------------------------- #
_C.TEST = CN()
# Evaluate every EVAL_PERIOD iterations (and after training); 0 = only at the end.
_C.TEST.EVAL_PERIOD = 0
_C.TEST.IMS_PER_BATCH = 128
# ReID distance: "cosine" or "euclidean".
_C.TEST.METRIC = "cosine"
# Average features of the image and its horizontal flip.
_C.TEST.FLIP_AUG = False
# Mixed-precision inference in inference_on_dataset (ReID feature extraction): True, False,
# or None / "auto": float16 on CUDA, bfloat16 on CPUs with native bfloat16, else float32.
# Features reach the evaluator in float32 either way.
_C.TEST.AMP = CN()
_C.TEST.AMP.ENABLED = None
# CMC length.
_C.TEST.MAX_RANK = 50
# Queries per chunk when computing distances and ranks (bounded memory).
_C.TEST.CHUNK_SIZE = 1024
# k-reciprocal re-ranking (Zhong et al. 2017).
_C.TEST.RERANK = CN()
_C.TEST.RERANK.ENABLED = False
_C.TEST.RERANK.K1 = 20
_C.TEST.RERANK.K2 = 6
_C.TEST.RERANK.LAMBDA = 0.3
# "authors": the authors' released re_ranking code (behind published "+re-ranking" numbers;
# K2 = 1 disables query expansion); "paper": the paper's equations (K2 = 0 disables it).
_C.TEST.RERANK.VARIANT = "authors"
# Gallery samples per query written to the ReID evaluator's JSON ranking dump
# (reid_topk_<dataset>.json, only when the evaluator is given an output_dir).
_C.TEST.TOPK_DUMP = 10
# --- faiss top-K retrieval for very large galleries (reid_plugins/evaluation/faiss_index.py).
_C.TEST.FAISS = CN()
# Rank with a faiss index instead of the dense ranking (needs `pip install faiss-cpu`; not
# combinable with TEST.RERANK or a model-provided distance such as GMN's M-Net).
_C.TEST.FAISS.ENABLED = False
# Gallery samples retrieved per query; mAP/mINP/CMC are computed over this top-K list (true
# matches beyond K count as missed); K >= gallery size gives the dense result.
_C.TEST.FAISS.TOPK = 100
# "flat" (exact inner product / L2) or "ivf" (approximate inverted file).
_C.TEST.FAISS.INDEX = "flat"
# IVF only: number of k-means cells (clipped to the gallery size).
_C.TEST.FAISS.NLIST = 1024
# IVF only: cells visited per query.
_C.TEST.FAISS.NPROBE = 16
# --- end faiss keys
# Person search evaluation (PersonSearchEvaluator, CUHK-SYSU / PRW protocols).
_C.TEST.SEARCH = CN()
# Keep gallery detections with score >= DET_THRESH (CUHK-SYSU 0.5; PRW codes use 0.5/0.3/0.15).
_C.TEST.SEARCH.DET_THRESH = 0.5
# CUHK-SYSU gallery size (TestG<N>.mat, N in 50..4000); -1 = full set (all test images).
_C.TEST.SEARCH.GALLERY_SIZE = 100
# CUHK-SYSU gallery sizes of the mAP-vs-gallery-size curve ([] = no curve).
_C.TEST.SEARCH.GALLERY_CURVE = [50, 100, 500, 1000, 2000, 4000]
# PRW: True = gallery of other cameras only (original protocol); False = multi-view (default).
_C.TEST.SEARCH.CROSS_CAMERA = False
# IoU of the detection-quality recall/AP (one-to-one matching).
_C.TEST.SEARCH.DETECTION_IOU = 0.5
# Detection recall/AP are reported at these score thresholds and at DET_THRESH
# (0.01: the threshold of the OIM/SeqNet reference evaluation).
_C.TEST.SEARCH.DETECTION_THRESHOLDS = [0.01]
# Detection matching: "standard" (OIM/SeqNet reference rule: a detection is a TP iff it and
# its best-IoU gt box are each other's best match) or "greedy" (by decreasing score).
_C.TEST.SEARCH.DETECTION_MATCHING = "standard"
# Ranking with Context Persons (TDN Eq. 6-8): threshold B and weight LAMBDA.
_C.TEST.SEARCH.RCP = CN()
_C.TEST.SEARCH.RCP.ENABLED = False
_C.TEST.SEARCH.RCP.B = 0.3
_C.TEST.SEARCH.RCP.LAMBDA = 0.2
# Recompute BN statistics on training data before evaluation (fvcore precise BN).
_C.TEST.PRECISE_BN = CN()
_C.TEST.PRECISE_BN.ENABLED = False
_C.TEST.PRECISE_BN.NUM_ITER = 200

# ----------------------------------------------------------------------------- #
# Trainer
# ----------------------------------------------------------------------------- #
_C.TRAINER = CN()
# Name in TRAINER_REGISTRY: "DefaultTrainer" or a method's trainer (e.g. M3L's meta-trainer).
_C.TRAINER.NAME = "DefaultTrainer"

# ----------------------------------------------------------------------------- #
# Misc
# ----------------------------------------------------------------------------- #
_C.OUTPUT_DIR = "./output"
# Modules (pkg.mod) or .py files imported before this file is merged, to register your own
# backbones, models, datasets, evaluators and config keys (relative paths: relative to the
# YAML file). Every command also reads --plugin and $REID_PLUGINS; see docs/plugins.md.
_C.PLUGINS = []
# Random seed; < 0 = derive one from time and pid (logged).
_C.SEED = -1
# Make CPU/GPU kernels deterministic (slower); required for bit-exact resume tests.
_C.DETERMINISTIC = False
_C.CUDNN_BENCHMARK = False
# Console/JSON/TensorBoard writers period, in iterations.
_C.LOG_PERIOD = 20

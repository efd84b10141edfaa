"""Config subtree of TDN (Teacher-guided Disentangling Networks, Liu et al., IEEE TMM).

:func:`add_tdn_config` adds ``cfg.MODEL.TDN``. TDN also reads the detector keys shared with
the OIM* baseline from ``cfg.MODEL.PERSON_SEARCH`` (Part-1 split, RPN anchors and sampling,
RoI sampling, box coder, inference NMS / score threshold; the re-ID RoIAlign size is
``PERSON_SEARCH.ROI_HEADS.POOLER_RESOLUTION``, 32 x 16 as in TDN Table VII) and the RCP
ranking keys from ``cfg.TEST.SEARCH.RCP``. The adder only adds what is missing (idempotent)
and is registered with :func:`reid_plugins.config.register_config_adder`.
"""

from __future__ import annotations

from reid_plugins.config import CfgNode as CN
from reid_plugins.config import add_subtree, register_config_adder
from reid_plugins.config.person_search_config import add_person_search_config

__all__ = ["add_tdn_config"]


def _tdn_node() -> CN:
    tdn = CN()

    # ---------------------------------------------------------------- detection branch
    # RoI head on Part-1 (TDN Sec. III-A): RoIAlign POOLER_RESOLUTION x Part-1 channels
    # (7 x 7 x 512), flattened, NUM_FC fully connected layers of FC_DIM units with ReLU, then a
    # 2-way person/background classifier and a 4-value box regressor.
    tdn.BOX_HEAD = CN()
    # RoIAlign output (height, width) of the RoI head.
    tdn.BOX_HEAD.POOLER_RESOLUTION = [7, 7]
    # RoIAlign sampling points per bin (0 = adaptive).
    tdn.BOX_HEAD.POOLER_SAMPLING_RATIO = 2
    # Fully connected layers and their width (TDN: 2 x 1024).
    tdn.BOX_HEAD.NUM_FC = 2
    tdn.BOX_HEAD.FC_DIM = 1024

    # ---------------------------------------------------------------- re-ID branch
    # Part-1 RoIAlign (PERSON_SEARCH.ROI_HEADS.POOLER_RESOLUTION) [+ KTB] -> Part-2 -> GAP ->
    # BN -> feature (2048-d for ResNet-50) -> softmax identity classifier (labelled boxes).
    tdn.REID = CN()
    # Identity classes of the softmax classifier; 0 = labelled identities of DATASETS.TRAIN.
    tdn.REID.NUM_PIDS = 0
    # Cross-entropy L_ce on labelled RoIs: multiplier and label smoothing (TDN: plain softmax).
    tdn.REID.CE_WEIGHT = 1.0
    tdn.REID.CE_EPSILON = 0.0
    # Training RoIs of the re-ID branch (Part-2, L_ce and L_t):
    # "detections" (default, TDN Sec. III-A: "the same person RoIs predicted by the detection
    #   branch in both the training and inference stages"): the detection branch's final boxes
    #   on the training image, computed as at inference (ROI_HEADS.SCORE_THRESH_TEST, NMS_THRESH
    #   _TEST, DETECTIONS_PER_IMAGE; detached); a detection whose highest IoU with a
    #   ground-truth box is >= TRAIN_DETECTION_IOU takes that box's pid (labelled -> L_ce + L_t,
    #   unlabelled -> L_t only), the others are background and dropped.
    # "gt_and_proposals": every ground-truth box of the image plus at most
    #   TRAIN_PROPOSALS_PER_IMAGE RPN proposals (random, detached) whose IoU with a
    #   ground-truth box is >= TRAIN_PROPOSAL_IOU (pid of the best box); 0 = ground truth only.
    tdn.REID.TRAIN_ROIS = "detections"
    tdn.REID.TRAIN_DETECTION_IOU = 0.5
    tdn.REID.TRAIN_PROPOSALS_PER_IMAGE = 8
    tdn.REID.TRAIN_PROPOSAL_IOU = 0.5
    # Freeze the bias of the BN after GAP (as the BNNeck of the strong ReID baseline).
    tdn.REID.BN_FREEZE_BIAS = True
    # Query pass (extract_query) also returns the detections of the query image (boxes,
    # scores, features), the context persons of RCP: only while TEST.SEARCH.RCP.ENABLED (the
    # detector is not run on query images without RCP).
    tdn.REID.QUERY_CONTEXT = True

    # ---------------------------------------------------------------- KTB
    # Knowledge Transfer Bridge: RoIAlign of the INPUT IMAGE to INPUT_SIZE (256 x 128 x 3),
    # through a separate (unshared) copy of Part-1 -> 32 x 16 x 512, added to the Part-1 RoI
    # features before Part-2. INPUT_SIZE / Part-1 stride must equal the re-ID RoIAlign size.
    tdn.KTB = CN()
    tdn.KTB.ENABLED = True
    # (height, width) of the image crops (also the teacher's input unless TEACHER.INPUT_SIZE).
    tdn.KTB.INPUT_SIZE = [256, 128]
    # RoIAlign sampling points per bin of the image crop (0 = adaptive).
    tdn.KTB.SAMPLING_RATIO = 2

    # ---------------------------------------------------------------- teacher branch
    # Frozen ReID teacher (training only): any META_ARCH_REGISTRY model whose eval forward
    # returns [{"feature": ...}] for 0-255 crops (ReIDBaseline, GMN, M3L, ...). It is kept
    # outside the student's module tree: never trained, not in the optimizer, not in the
    # student's checkpoints, always in eval mode.
    tdn.TEACHER = CN()
    tdn.TEACHER.ENABLED = True
    # Config file of the teacher (a ReID config, e.g. projects/tdn/teacher_prw.yaml).
    tdn.TEACHER.CONFIG_FILE = ""
    # KEY VALUE overrides applied to the teacher config after CONFIG_FILE, as on a command line
    # (e.g. ["MODEL.BACKBONE.DEPTH", "50"] for a teacher trained with that override).
    tdn.TEACHER.OPTS = []
    # Teacher checkpoint (trained on the person crops of the same dataset).
    tdn.TEACHER.WEIGHTS = ""
    # (height, width) of the teacher's input crops; [] = the teacher config's INPUT.SIZE_TEST.
    tdn.TEACHER.INPUT_SIZE = []
    # Linear map of the student feature to the teacher's dimension for L_t (for teachers with
    # another feature size, e.g. MGN); False = dimensions must match.
    tdn.TEACHER.PROJECTION = False
    # w of L_reid = w * L_t + L_ce (Eq. 4): W_INIT for epoch < RAMP_EPOCHS[0], linear to
    # W_FINAL over RAMP_EPOCHS[0] <= epoch < RAMP_EPOCHS[1] (5 - 0.4 (epoch - 15) = 11 - 0.4
    # epoch), W_FINAL afterwards. epoch = iteration // SOLVER.ITERS_PER_EPOCH (0 = train
    # images // SOLVER.IMS_PER_BATCH); set every iteration by TeacherWeightHook.
    tdn.TEACHER.W_INIT = 5.0
    tdn.TEACHER.W_FINAL = 1.0
    tdn.TEACHER.RAMP_EPOCHS = [15, 25]
    return tdn


@register_config_adder
def add_tdn_config(cfg: CN) -> CN:
    """Add ``cfg.MODEL.TDN`` (and, through :func:`add_person_search_config`, the shared
    ``cfg.MODEL.PERSON_SEARCH``) when missing. Idempotent. Returns ``cfg``."""
    add_person_search_config(cfg)
    add_subtree(cfg.MODEL, "TDN", _tdn_node())
    return cfg

"""``add_mednext_config``: the MedNeXt keys added to any YACS config tree (PyTC's or ours).

Written in the style of detectron2's ``add_*_config``: one function, one comment per key,
idempotent. Keys that accept either an int or a list default to ``None`` ("use the preset"),
because YACS refuses to merge an int into a list default and vice versa.
"""
from typing import Any, List, Optional, Sequence, Tuple

from yacs.config import CfgNode as CN

# (dotted key, default, comment). Order is the order shown by cfg.dump().
MEDNEXT_KEYS: List[Tuple[str, Any, str]] = [
    ("MODEL.MEDNEXT_SIZE", "S", "MedNeXt preset: 'S', 'B', 'M' or 'L'."),
    ("MODEL.KERNEL_SIZE", None, "Depthwise kernel: 3, 5 or 7; [z, y, x] per axis; or 9 per-stage values. None: 3."),
    ("MODEL.DEEP_SUPERVISION", False, "Add the 1/2..1/16 heads and train them with the deep-supervision loss."),
    ("MODEL.MEDNEXT.N_CHANNELS", None, "Channels of the first stage. None: the preset's (32)."),
    ("MODEL.MEDNEXT.EXP_R", None, "Expansion ratio, an int or 9 ints. None: the preset's."),
    ("MODEL.MEDNEXT.BLOCK_COUNTS", None, "Blocks in each of the 9 stages. None: the preset's."),
    ("MODEL.MEDNEXT.NORM", "group", "Block norm: 'group' (one group per channel) or 'layer'."),
    ("MODEL.MEDNEXT.GRN", False, "Global response normalisation in the blocks."),
    ("MODEL.MEDNEXT.DO_RES", True, "Residual connections inside blocks."),
    ("MODEL.MEDNEXT.DO_RES_UP_DOWN", True, "Residual 1x1 convs in the down and up blocks."),
    ("MODEL.MEDNEXT.CHECKPOINT_STYLE", "preset", "'preset', 'none' or 'outside_block' (gradient checkpointing)."),
    ("MODEL.MEDNEXT.STRIDES", None, "Per-level downsampling: 4 entries, each an int or [z, y, x]. None: 2."),
    ("MODEL.MEDNEXT.DS_WEIGHTS", None, "Loss weight per scale, full resolution first. None: 1, 1/2, ... normalised."),
    ("MODEL.AMP_DTYPE", "auto",
     "Our engine's MIXED_PRECESION type: 'auto' (float16 on GPU, bfloat16 on CPU), 'bfloat16' or 'float16' (GPU)."),
    ("INFERENCE.STREAM_BLOCK_SIZE", [0, 1024, 1024],
     "Our engine's largest output block [z, y, x] held in memory while streaming; 0: the whole axis."),
    ("SOLVER.ADAM_EPS", 1e-8, "eps of Adam and AdamW (PyTC does not set it; the MedNeXt recipe uses 1e-4)."),
    ("SOLVER.POLY_POWER", 0.9, "Exponent of the 'Poly' LR scheduler: lr * (1 - it / ITERATION_TOTAL) ** power."),
]


def _node(cfg: CN, path: List[str]) -> CN:
    node = cfg
    for name in path:
        if name not in node:
            node[name] = CN()
        node = node[name]
    return node


def add_mednext_config(cfg: CN) -> CN:
    """Add the MedNeXt keys to ``cfg`` in place (a second call changes nothing) and return it.

    Args:
        cfg: a YACS config, e.g. PyTC's ``get_cfg_defaults()`` or ours.
    """
    for key, default, _ in MEDNEXT_KEYS:
        *path, name = key.split(".")
        node = _node(cfg, path)
        if name not in node:
            node[name] = default
    return cfg


def get_native_defaults() -> CN:
    """Our engine's defaults: the subset of PyTC v1.0's schema we read, with PyTC's names,
    defaults and types, plus the MedNeXt keys. A YAML written for this tree also loads in PyTC.
    """
    cfg = CN()
    cfg.SYSTEM = CN()
    cfg.SYSTEM.NUM_GPUS = 4  # GPUs used by DataParallel
    cfg.SYSTEM.NUM_CPUS = 4  # data-loading workers
    cfg.SYSTEM.DISTRIBUTED = False  # set by --distributed
    cfg.SYSTEM.PARALLEL = "DP"  # 'DP' or 'DDP'

    cfg.MODEL = CN()
    cfg.MODEL.ARCHITECTURE = "unet_3d"  # 'mednext' selects this package's network
    cfg.MODEL.IN_PLANES = 1  # input channels
    cfg.MODEL.OUT_PLANES = 1  # output channels, all targets together
    cfg.MODEL.INPUT_SIZE = [8, 256, 256]  # training patch [z, y, x]
    cfg.MODEL.OUTPUT_SIZE = [8, 256, 256]  # prediction patch [z, y, x]
    cfg.MODEL.TARGET_OPT = ["0"]  # one code per target: 0 binary, 2 affinity, 4 boundary, 9 semantic
    cfg.MODEL.WEIGHT_OPT = [["1"]]  # per target, per loss: 0 none/valid mask, 1 fg/bg balance
    cfg.MODEL.LOSS_OPTION = [["WeightedBCE"]]  # per target, the loss names
    cfg.MODEL.LOSS_WEIGHT = [[1.0]]  # per target, per loss
    cfg.MODEL.OUTPUT_ACT = [["none"]]  # per target, per loss: activation before the loss
    cfg.MODEL.MIXED_PRECESION = False  # PyTC's spelling
    cfg.MODEL.PRE_MODEL_ITER = 0  # iteration to start counting from

    cfg.DATASET = CN()
    cfg.DATASET.INPUT_PATH = "path/to/input"  # folder of the volumes
    cfg.DATASET.IMAGE_NAME = None  # image file(s), several joined with '@'
    cfg.DATASET.LABEL_NAME = None  # label file(s)
    cfg.DATASET.VALID_MASK_NAME = None  # valid-mask file(s)
    cfg.DATASET.VAL_IMAGE_NAME = None  # validation image file(s)
    cfg.DATASET.VAL_LABEL_NAME = None  # validation label file(s)
    cfg.DATASET.VAL_VALID_MASK_NAME = None  # validation valid-mask file(s)
    cfg.DATASET.OUTPUT_PATH = "path/to/output"  # checkpoints, logs and predictions
    cfg.DATASET.PAD_SIZE = [2, 64, 64]  # padding around each volume: [z, y, x] or [z0, z1, y0, y1, x0, x1]
    cfg.DATASET.PAD_MODE = "reflect"  # 'reflect', 'symmetric', 'edge' or 'constant' (zeros)
    cfg.DATASET.DO_2D = False  # train a 2D network on z slices
    cfg.DATASET.IS_ISOTROPIC = False  # allow z transposes in augmentation
    cfg.DATASET.DISTRIBUTED = False  # different crops per DDP rank

    cfg.SOLVER = CN()
    cfg.SOLVER.NAME = "SGD"  # 'SGD', 'Adam' or 'AdamW'
    cfg.SOLVER.LR_SCHEDULER_NAME = "MultiStepLR"  # also WarmupCosineLR, Constant, Poly
    cfg.SOLVER.BASE_LR = 0.001  # learning rate
    cfg.SOLVER.WEIGHT_DECAY = 0.0001  # weight decay
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of norm parameters
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0  # weight decay of biases
    cfg.SOLVER.BIAS_LR_FACTOR = 1.0  # learning-rate factor of biases
    cfg.SOLVER.BETAS = (0.9, 0.999)  # Adam and AdamW betas
    cfg.SOLVER.MOMENTUM = 0.9  # SGD momentum
    cfg.SOLVER.ITERATION_SAVE = 5000  # checkpoint every this many iterations
    cfg.SOLVER.ITERATION_TOTAL = 40000  # training length
    cfg.SOLVER.ITERATION_VAL = 5000  # validate every this many iterations
    cfg.SOLVER.SAMPLES_PER_BATCH = 2  # batch size per process
    cfg.SOLVER.STEPS = (30000, 35000)  # MultiStep milestones
    cfg.SOLVER.GAMMA = 0.1  # MultiStep decay factor
    cfg.SOLVER.WARMUP_FACTOR = 1.0 / 1000  # warm-up start factor
    cfg.SOLVER.WARMUP_ITERS = 1000  # warm-up length
    cfg.SOLVER.WARMUP_METHOD = "linear"  # warm-up shape
    cfg.SOLVER.CLIP_GRADIENTS = CN({"ENABLED": False})  # gradient clipping
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"  # 'value' or 'norm'
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # threshold
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the norm

    cfg.INFERENCE = CN()
    cfg.INFERENCE.INPUT_SIZE = None  # window [z, y, x]; None: MODEL.INPUT_SIZE
    cfg.INFERENCE.OUTPUT_SIZE = None  # output window; None: MODEL.OUTPUT_SIZE
    cfg.INFERENCE.OUTPUT_ACT = ["sigmoid"]  # per target activation of the prediction
    cfg.INFERENCE.IMAGE_NAME = None  # test image file(s)
    cfg.INFERENCE.OUTPUT_PATH = ""  # prediction folder
    cfg.INFERENCE.OUTPUT_NAME = "result.h5"  # prediction file
    cfg.INFERENCE.PAD_SIZE = None  # padding [z, y, x]; None: DATASET.PAD_SIZE
    cfg.INFERENCE.UNPAD = True  # crop the padding off the prediction
    cfg.INFERENCE.AUG_MODE = "mean"  # how test-time flips are combined
    cfg.INFERENCE.AUG_NUM = None  # test-time flips: None/0, 4, 8 or 16
    cfg.INFERENCE.STRIDE = [4, 128, 128]  # sliding-window step [z, y, x]
    cfg.INFERENCE.SAMPLES_PER_BATCH = 4  # windows per batch
    cfg.INFERENCE.BLENDING = "gaussian"  # window blending: 'gaussian' or 'bump'

    cfg.MONITOR = CN()
    cfg.MONITOR.LOG_OPT = [1, 1, 0]  # TensorBoard, text log, ...
    cfg.MONITOR.VIS_OPT = [0, 16]  # visualisation option, sections shown
    cfg.MONITOR.ITERATION_NUM = [20, 200]  # log scalars / images every this many iterations
    return add_mednext_config(cfg)


def load_native_cfg(config_file: str, config_base: Optional[str] = None, opts: Sequence[str] = ()) -> CN:
    """Native defaults, then ``config_base``, ``config_file`` and command-line ``opts``; frozen.

    A key outside our subset of PyTC's schema raises one clear error naming it.

    Args:
        config_file: the task YAML.
        config_base: an optional base YAML merged first.
        opts: ``KEY VALUE`` pairs.
    """
    cfg = get_native_defaults()
    sources = [(path, cfg.merge_from_file) for path in (config_base, config_file) if path]
    sources.append(("the command line", lambda _: cfg.merge_from_list(list(opts))))
    for source, merge in sources:
        try:
            merge(source)
        except (KeyError, AssertionError) as error:
            raise ValueError(
                f"{source}: {error.args[0] if error.args else error}. This engine reads a subset of PyTC's keys "
                "(see connectomics_mednext/config.py); install PyTorch Connectomics to use the others."
            ) from error
    cfg.freeze()
    return cfg


# (key, value our engine requires, why): PyTC keys our engine has but cannot honour otherwise yet.
NATIVE_VALUE_LIMITS = [
    ("DATASET.DO_2D", False, "our engine trains 3D networks only"),
    ("INFERENCE.OUTPUT_SIZE", None, "our engine predicts whole windows (None means INFERENCE.INPUT_SIZE)"),
]


def check_native_values(cfg: CN) -> None:
    """Raise one clear error for a value our engine would otherwise have to ignore.

    Args:
        cfg: the loaded config.
    """
    for key, required, reason in NATIVE_VALUE_LIMITS:
        node = cfg
        for name in key.split("."):
            node = node[name]
        value = list(node) if isinstance(node, (list, tuple)) else node
        acceptable = [required]
        if key == "INFERENCE.OUTPUT_SIZE" and value is not None:
            acceptable.append(list(cfg.INFERENCE.INPUT_SIZE or cfg.MODEL.INPUT_SIZE))
        if value not in acceptable:
            raise ValueError(f"{key} is {value!r}, but {reason}; use {required!r} or PyTorch Connectomics.")

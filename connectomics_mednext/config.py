"""``add_mednext_config``: the MedNeXt keys added to any YACS config tree (PyTC's or ours).

Written in the style of detectron2's ``add_*_config``: each key is assigned once in
:func:`mednext_keys` with its comment beside it (``grep -n MEDNEXT.GRN`` finds both), and
adding them to a tree keeps the values already there, so a second call changes nothing.
"""

import os
import re
from typing import Any, Callable, Hashable, List, Mapping, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode as CN

from .errors import ConfigError, MissingFileError, argument, closest


def mednext_keys() -> CN:
    """The keys this package adds, with their defaults, as a tree of their own.

    Keys that take an int or a list default to ``None`` ("the size's"), because YACS refuses
    to merge an int into a list default and vice versa.
    """
    _C = CN()
    _C.MODEL = CN()
    _C.MODEL.MEDNEXT_SIZE = "S"  # MedNeXt size: 'S', 'B', 'M' or 'L'
    _C.MODEL.KERNEL_SIZE = None  # depthwise kernel: 3, 5 or 7; [z, y, x] per axis; or 9 per-stage values. None: 3
    _C.MODEL.DEEP_SUPERVISION = False  # add the 1/2..1/16 heads and train them with the deep-supervision loss

    _C.MODEL.MEDNEXT = CN()
    _C.MODEL.MEDNEXT.N_CHANNELS = None  # channels of the first stage. None: the size's (32)
    _C.MODEL.MEDNEXT.EXP_R = None  # expansion ratio, an int or 9 ints. None: the size's
    _C.MODEL.MEDNEXT.BLOCK_COUNTS = None  # blocks in each of the 9 stages. None: the size's
    _C.MODEL.MEDNEXT.NORM = "group"  # block norm: 'group' (one group per channel) or 'layer'
    _C.MODEL.MEDNEXT.GRN = False  # global response normalisation in the blocks
    _C.MODEL.MEDNEXT.DO_RES = True  # residual connections inside blocks
    _C.MODEL.MEDNEXT.DO_RES_UP_DOWN = True  # residual 1x1 convs in the down and up blocks
    # Activation checkpointing (memory for recomputation; nothing to do with checkpoint files): 'preset' (the
    # size's: on for M and L), 'none' or 'outside_block'.
    _C.MODEL.MEDNEXT.CHECKPOINT_STYLE = "preset"
    _C.MODEL.MEDNEXT.STRIDES = None  # per-level downsampling: 4 entries, each an int or [z, y, x]. None: 2
    _C.MODEL.MEDNEXT.DS_WEIGHTS = None  # loss weight per scale, full resolution first. None: 1, 1/2, ... normalised
    # Our engine's MIXED_PRECESION type: 'auto' (float16 on GPU, bfloat16 on CPU), 'bfloat16' or 'float16' (GPU).
    _C.MODEL.AMP_DTYPE = "auto"

    _C.INFERENCE = CN()
    # Our engine's largest output block [z, y, x] held in memory while streaming; 0: the whole axis.
    _C.INFERENCE.STREAM_BLOCK_SIZE = [0, 1024, 1024]
    # Our engine: after inference, decode the prediction into <name>_seg.h5 with this
    # connectomics-mednext-segment mode ('binary', 'bc', 'boundary' or 'affinity'; its default
    # thresholds). None: probabilities only.
    _C.INFERENCE.DECODE = None

    _C.SOLVER = CN()
    _C.SOLVER.ADAM_EPS = 1e-8  # eps of Adam and AdamW (PyTC does not set it; the MedNeXt recipe uses 1e-4)
    _C.SOLVER.POLY_POWER = 0.9  # exponent of the 'Poly' LR scheduler: lr * (1 - it / ITERATION_TOTAL) ** power
    return _C


def mednext_key_defaults() -> List[Tuple[str, Any]]:
    """(dotted key, default) for every key :func:`add_mednext_config` adds."""
    keys = mednext_keys()
    return [(key, config_value(keys, key)) for key in config_keys(keys)]


def config_value(cfg: CN, key: str) -> Any:
    """The value of dotted ``key`` (``MODEL.MEDNEXT.GRN``) in ``cfg``.

    Args:
        cfg: a config tree.
        key: the dotted key.
    """
    for name in key.split("."):
        cfg = cfg[name]
    return cfg


def _add_missing(cfg: CN, additions: CN) -> None:
    for name, value in additions.items():
        if isinstance(value, CN):
            if name not in cfg:
                cfg[name] = CN()
            _add_missing(cfg[name], value)
        elif name not in cfg:
            cfg[name] = value


def add_mednext_config(cfg: CN) -> CN:
    """Add the MedNeXt keys (:func:`mednext_keys`) to ``cfg`` in place, keeping values it has; return it.

    A second call changes nothing.

    Args:
        cfg: a YACS config, e.g. PyTC's ``get_cfg_defaults()`` or ours.
    """
    _add_missing(cfg, mednext_keys())
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
    cfg.DATASET.IS_ISOTROPIC = False  # PyTC's UNet option; MedNeXt's isotropy is KERNEL_SIZE and MEDNEXT.STRIDES
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

    # PyTC's augmentor, with its defaults; each node runs with probability P, in reverse order.
    cfg.AUGMENTOR = CN({"ENABLED": True})  # False: no augmentation
    cfg.AUGMENTOR.SMOOTH = False  # smooth augmented labels (not implemented: must stay False)
    cfg.AUGMENTOR.ADDITIONAL_TARGETS_NAME = ["label"]  # what is augmented with the image (must stay as is)
    cfg.AUGMENTOR.ADDITIONAL_TARGETS_TYPE = ["mask"]  # how they are resampled (must stay as is)
    cfg.AUGMENTOR.ROTATE = CN({"ENABLED": True})  # False: no rotate augmentation
    cfg.AUGMENTOR.ROTATE.ROT90 = True  # multiples of 90 degrees in y-x; False: any angle
    cfg.AUGMENTOR.ROTATE.P = 1.0  # chance that it runs on a sample
    cfg.AUGMENTOR.ROTATE.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.RESCALE = CN({"ENABLED": True})  # False: no rescale augmentation
    cfg.AUGMENTOR.RESCALE.FIX_ASPECT = False  # one zoom factor for y and x
    cfg.AUGMENTOR.RESCALE.P = 0.5  # chance that it runs on a sample
    cfg.AUGMENTOR.RESCALE.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.FLIP = CN({"ENABLED": True})  # False: no flip augmentation
    cfg.AUGMENTOR.FLIP.P = 1.0  # chance that it runs on a sample
    cfg.AUGMENTOR.FLIP.DO_ZTRANS = 0  # 1: also swap z and x (isotropic data, cubic crops)
    cfg.AUGMENTOR.FLIP.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.ELASTIC = CN({"ENABLED": True})  # False: no elastic augmentation
    cfg.AUGMENTOR.ELASTIC.P = 0.75  # chance that it runs on a sample
    cfg.AUGMENTOR.ELASTIC.ALPHA = 16.0  # largest displacement, pixels
    cfg.AUGMENTOR.ELASTIC.SIGMA = 4.0  # smoothness of the displacement, pixels
    cfg.AUGMENTOR.ELASTIC.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.GRAYSCALE = CN({"ENABLED": True})  # False: no grayscale augmentation
    cfg.AUGMENTOR.GRAYSCALE.P = 0.75  # chance that it runs on a sample
    cfg.AUGMENTOR.GRAYSCALE.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.MISSINGPARTS = CN({"ENABLED": True})  # False: no missingparts augmentation
    cfg.AUGMENTOR.MISSINGPARTS.P = 0.9  # also the chance of each plane
    cfg.AUGMENTOR.MISSINGPARTS.ITER = 64  # half-width of the missing line, pixels
    cfg.AUGMENTOR.MISSINGPARTS.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.MISSINGSECTION = CN({"ENABLED": True})  # False: no missingsection augmentation
    cfg.AUGMENTOR.MISSINGSECTION.P = 0.5  # chance that it runs on a sample
    cfg.AUGMENTOR.MISSINGSECTION.NUM_SECTION = 2  # z planes removed
    cfg.AUGMENTOR.MISSINGSECTION.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.MISALIGNMENT = CN({"ENABLED": True})  # False: no misalignment augmentation
    cfg.AUGMENTOR.MISALIGNMENT.P = 0.5  # chance that it runs on a sample
    cfg.AUGMENTOR.MISALIGNMENT.DISPLACEMENT = 16  # largest shift, pixels
    cfg.AUGMENTOR.MISALIGNMENT.ROTATE_RATIO = 0.5  # chance of a rotation instead of a shift
    cfg.AUGMENTOR.MISALIGNMENT.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.MOTIONBLUR = CN({"ENABLED": True})  # False: no motionblur augmentation
    cfg.AUGMENTOR.MOTIONBLUR.P = 0.5  # chance that it runs on a sample
    cfg.AUGMENTOR.MOTIONBLUR.SECTIONS = 2  # z planes blurred
    cfg.AUGMENTOR.MOTIONBLUR.KERNEL_SIZE = 11  # blur length, pixels
    cfg.AUGMENTOR.MOTIONBLUR.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.CUTBLUR = CN({"ENABLED": True})  # False: no cutblur augmentation
    cfg.AUGMENTOR.CUTBLUR.P = 0.5  # chance that it runs on a sample
    cfg.AUGMENTOR.CUTBLUR.LENGTH_RATIO = 0.4  # cuboid side, as a share of each axis
    cfg.AUGMENTOR.CUTBLUR.DOWN_RATIO_MIN = 2.0  # smallest downsampling factor of the blurred cuboid
    cfg.AUGMENTOR.CUTBLUR.DOWN_RATIO_MAX = 8.0  # largest downsampling factor of the blurred cuboid
    cfg.AUGMENTOR.CUTBLUR.DOWNSAMPLE_Z = False  # also downsample along z
    cfg.AUGMENTOR.CUTBLUR.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.CUTNOISE = CN({"ENABLED": True})  # False: no cutnoise augmentation
    cfg.AUGMENTOR.CUTNOISE.P = 0.75  # chance that it runs on a sample
    cfg.AUGMENTOR.CUTNOISE.LENGTH_RATIO = 0.4  # cuboid side, as a share of each axis
    cfg.AUGMENTOR.CUTNOISE.SCALE = 0.3  # noise amplitude (intensities in 0..1)
    cfg.AUGMENTOR.CUTNOISE.SKIP = []  # PyTC's targets to leave alone (must stay empty here)
    cfg.AUGMENTOR.COPYPASTE = CN({"ENABLED": False})  # not implemented: must stay False
    cfg.AUGMENTOR.COPYPASTE.AUG_THRES = 0.7  # PyTC's overlap threshold of pasted objects
    cfg.AUGMENTOR.COPYPASTE.P = 0.8  # chance that it runs on a sample
    cfg.AUGMENTOR.COPYPASTE.SKIP = []  # PyTC's targets to leave alone (must stay empty here)

    cfg.MONITOR = CN()
    cfg.MONITOR.LOG_OPT = [1, 1, 0]  # [print iteration lines, TensorBoard, text log <OUTPUT_PATH>/log/log.txt]
    cfg.MONITOR.VIS_OPT = [0, 16]  # visualisation option, sections shown
    cfg.MONITOR.ITERATION_NUM = [20, 200]  # log scalars / images every this many iterations
    return add_mednext_config(cfg)


CONFIG_SUFFIXES = (".yaml", ".yml")


def check_config_file(path: str, flag: str) -> None:
    """Refuse a config file that is not YAML (yacs would execute a ``.py`` one) or does not exist.

    Args:
        path: the file named on the command line.
        flag: ``--config-file`` or ``--config-base``, for the message.
    """
    if not path.lower().endswith(CONFIG_SUFFIXES):
        raise ConfigError(f"{flag} {path!r} must be a YAML file ending in .yaml or .yml; configs are data, not code.")
    if not os.path.isfile(path):
        raise MissingFileError(f"{flag}: file {path!r} does not exist.")


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader that refuses a key given twice in one mapping (YAML keeps the last, silently)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # construct_mapping refuses it below, as YAML's own error
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the key {key!r} is given twice in one mapping (also at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
# YAML 1.1 reads 1e-3 and 2e0 (no dot) as strings; YAML 1.2, and users, read them as numbers.
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)
# What a config value may be, as yacs allows; dates, bytes and sets are YAML's, not a config's.
VALUE_TYPES = (str, int, float, bool, list, tuple, type(None))


def check_yaml_values(data: Any, source: str, prefix: str = "") -> None:
    """Refuse what yacs cannot hold, naming the key: keys that are not names, dates, bytes, sets, mappings in lists.

    Args:
        data: the mapping read from a YAML file.
        source: the file, with the flag that named it, for messages.
        prefix: the dotted path of ``data``.
    """
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: {prefix}{key!r} is not a key name; config keys are names such as 'MODEL'.")
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            check_yaml_values(value, source, name + ".")
        elif not isinstance(value, VALUE_TYPES) or (
            isinstance(value, (list, tuple)) and not all(isinstance(v, VALUE_TYPES) for v in _leaves(value))
        ):
            shown = (
                f"a YAML {type(value).__name__}" if not isinstance(value, (list, tuple)) else "a list with a mapping"
            )
            raise ConfigError(
                f"{source}: {name} holds {shown} ({value!r}); config values are numbers, strings, booleans, "
                "lists or null (quote a date or a code to make it a string)."
            )


def _leaves(values: Sequence[Any]) -> List[Any]:
    return [leaf for v in values for leaf in (_leaves(v) if isinstance(v, (list, tuple)) else [v])]


def read_yaml_config(path: str, flag: str) -> CN:
    """The mapping of keys in a YAML config file, read as data only.

    Args:
        path: the YAML file.
        flag: the flag that named it, for messages.
    """
    check_config_file(path, flag)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=UniqueKeyLoader)  # safe_load's loader, without silent duplicates
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{flag} {path!r} is not valid YAML{where}: {getattr(error, 'problem', error)}.") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{flag} {path!r} is not a text file; expected YAML.") from error
    if data is None:
        raise ConfigError(f"{flag} {path!r} is empty; expected a YAML mapping of config keys such as 'MODEL:'.")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{flag} {path!r} holds a YAML {type(data).__name__}; expected a mapping of config keys such as 'MODEL:'."
        )
    check_yaml_values(data, f"{flag} {path!r}")
    return CN(data)


def config_keys(cfg: CN, prefix: str = "") -> List[str]:
    """Every dotted key of a config tree, leaves only.

    Args:
        cfg: the tree.
        prefix: the dotted path of ``cfg`` itself.
    """
    keys = []
    for name, value in cfg.items():
        key = f"{prefix}{name}"
        keys.extend(config_keys(value, key + ".") if isinstance(value, CN) else [key])
    return keys


def explain_merge_error(error: Exception, source: str, defaults: CN) -> ConfigError:
    """One sentence for a yacs merge failure: the unknown key with the closest known one, or the type expected.

    Args:
        error: what yacs raised (KeyError for an unknown key, ValueError for a type, AssertionError otherwise).
        source: the file or "the command line".
        defaults: the tree being merged into, whose keys are the valid ones.
    """
    text = str(error.args[0]) if error.args else str(error)
    unknown = re.match(r"Non-existent (?:config )?key: (\S+)", text)
    if unknown:
        key = unknown.group(1)
        hint = closest(key, config_keys(defaults))
        suggestion = (
            f"did you mean {hint!r}?"
            if hint
            else "this engine reads a subset of PyTC's keys (see "
            "connectomics_mednext/config.py); PyTorch Connectomics reads the others."
        )
        return ConfigError(f"{source}: {key} is not a config key; {suggestion}")
    mismatch = re.match(
        r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) "
        r"for config key: (\S+)",
        text,
    )
    if mismatch:
        expected, _, default, given, key = mismatch.groups()
        return ConfigError(f"{source}: {key} must be of type {expected} (like its default {default}), got {given}.")
    return ConfigError(f"{source}: {text}")


def merge_config(cfg: CN, config_file: str, config_base: Optional[str] = None, opts: Sequence[str] = ()) -> CN:
    """Merge ``config_base``, ``config_file`` and command-line ``opts`` into ``cfg``, in that order.

    A key the tree lacks, a value of the wrong type, an empty or non-YAML file raise one
    :class:`ConfigError` naming the file and the key (with the closest known key).

    Args:
        cfg: the default tree (ours, or PyTC's with our keys).
        config_file: the task YAML.
        config_base: an optional base YAML merged first.
        opts: ``KEY VALUE`` pairs.
    """
    named = ((config_base, argument("config_base")), (config_file, argument("config_file")))
    for path, flag in [(path, flag) for path, flag in named if path]:
        merge_values(cfg, read_yaml_config(path, flag), path)
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"Command-line overrides come in KEY VALUE pairs; {opts[-1]!r} has no value.")
    for key in opts[::2]:
        if not key:
            raise ConfigError("A command-line override has an empty key; give KEY VALUE, e.g. SOLVER.BASE_LR 0.001.")
        if _is_section(cfg, key):
            raise ConfigError(
                f"{key} is a section, not a key: a command-line override names one key inside it, e.g. "
                f"{key}.{next(iter(config_value(cfg, key)))} VALUE."
            )
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as error:
        raise explain_merge_error(error, "the command line", cfg) from error
    return cfg


def _is_section(cfg: CN, key: str) -> bool:
    """Whether dotted ``key`` names a node that holds keys."""
    try:
        return isinstance(config_value(cfg, key), CN)
    except KeyError:
        return False


def _check_sections(cfg: CN, values: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Refuse a section left empty (``SOLVER:`` with nothing beneath), which YAML reads as null."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if value is None and _is_section(cfg, name):
            raise ConfigError(f"{source}: the section {name}: is empty; give its keys beneath it, or remove it.")
        if isinstance(value, Mapping) and _is_section(cfg, name):
            _check_sections(cfg, value, source, name + ".")


def merge_values(cfg: CN, values: Mapping[str, Any], source: str) -> CN:
    """Merge a nested mapping of config values into ``cfg``, checked as yacs checks YAML files.

    Args:
        cfg: the tree merged into.
        values: ``{"SECTION": {"KEY": value}}``.
        source: what the values came from, for the message (a file, "the overrides").
    """
    _check_sections(cfg, values, source)
    try:
        cfg.merge_from_other_cfg(values if isinstance(values, CN) else CN(values))
    except (KeyError, ValueError, AssertionError) as error:
        raise explain_merge_error(error, source, cfg) from error
    return cfg


def load_native_cfg(
    config_file: str, config_base: Optional[str] = None, opts: Sequence[str] = (), freeze: bool = True
) -> CN:
    """Native defaults, then ``config_base``, ``config_file`` and command-line ``opts``.

    Args:
        config_file: the task YAML.
        config_base: an optional base YAML merged first.
        opts: ``KEY VALUE`` pairs.
        freeze: return it frozen, as the engine uses it.
    """
    cfg = merge_config(get_native_defaults(), config_file, config_base, opts)
    if freeze:
        cfg.freeze()
    return cfg


# Keys that say where files are read or written. A config saved in a checkpoint that someone
# shares must not choose them: without a config file, they come from the command line, or the
# current folder.
PATH_KEYS = (
    "DATASET.INPUT_PATH",
    "DATASET.IMAGE_NAME",
    "DATASET.LABEL_NAME",
    "DATASET.VALID_MASK_NAME",
    "DATASET.VAL_IMAGE_NAME",
    "DATASET.VAL_LABEL_NAME",
    "DATASET.VAL_VALID_MASK_NAME",
    "DATASET.OUTPUT_PATH",
    "INFERENCE.IMAGE_NAME",
    "INFERENCE.OUTPUT_PATH",
    "INFERENCE.OUTPUT_NAME",
)
# What those keys read when a checkpoint's config leaves them out: the current folder, PyTC's output name.
PATH_DEFAULTS = {"DATASET.INPUT_PATH": "", "DATASET.OUTPUT_PATH": ".", "INFERENCE.OUTPUT_PATH": ""}


def without_paths(text: str) -> str:
    """A config's YAML text with :data:`PATH_KEYS` at :data:`PATH_DEFAULTS` or left out (their defaults).

    Args:
        text: YAML of a config tree (``cfg.dump()``).
    """
    data = yaml.safe_load(text) or {}
    for key in PATH_KEYS:
        section, name = key.split(".")
        data.get(section, {}).pop(name, None)
    for key, value in PATH_DEFAULTS.items():
        section, name = key.split(".")
        data.setdefault(section, {})[name] = value
    return yaml.safe_dump(data)


def _file_name(value: Any) -> bool:
    """A file or folder name that stays inside its folder: no separator, not '.', '..' or empty."""
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and os.sep not in value


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _increasing_iterations(value: Any) -> bool:
    """Positive ints, each above the one before (YAML 1.1 reads ``2e3`` as a string, which this refuses)."""
    steps = list(value)
    return all(_positive_int(s) for s in steps) and all(a < b for a, b in zip(steps, steps[1:]))


def _sizes(value: Any, count: int = 3, least: int = 1) -> bool:
    """``count`` ints of at least ``least`` (a list or tuple)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == count
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in value)
    )


def _padding(value: Any) -> bool:
    return any(_sizes(value, count, 0) for count in (1, 3, 6))


def _per_target(cfg: CN, value: Any) -> bool:
    """One list per target, each as long as that target's LOSS_OPTION."""
    losses = list(cfg.MODEL.LOSS_OPTION)
    return (
        isinstance(value, (list, tuple))
        and len(value) == len(losses)
        and all(isinstance(v, (list, tuple)) and len(v) == len(n) for v, n in zip(value, losses))
    )


def _inference_output_size(cfg: CN, value: Any) -> bool:
    return value is None or list(value) == list(cfg.INFERENCE.INPUT_SIZE or cfg.MODEL.INPUT_SIZE)


# (key, whether our engine can honour the value, what it needs). Values our engine would
# otherwise ignore or crash on are refused, never ignored.
NATIVE_VALUE_RULES: List[Tuple[str, Callable[[CN, Any], bool], str]] = [
    ("MODEL.INPUT_SIZE", lambda cfg, v: _sizes(v), "3 positive ints [z, y, x]"),
    ("MODEL.OUTPUT_SIZE", lambda cfg, v: _sizes(v), "3 positive ints [z, y, x]"),
    (
        "INFERENCE.INPUT_SIZE",
        lambda cfg, v: v is None or _sizes(v),
        "None (MODEL.INPUT_SIZE) or 3 positive ints [z, y, x]",
    ),
    ("INFERENCE.STRIDE", lambda cfg, v: _sizes(v), "3 positive ints [z, y, x]"),
    ("INFERENCE.STREAM_BLOCK_SIZE", lambda cfg, v: _sizes(v, least=0), "3 ints [z, y, x] of 0 (a whole axis) or more"),
    (
        "DATASET.PAD_SIZE",
        lambda cfg, v: _padding(v),
        "1, 3 or 6 non-negative ints ([z, y, x] or [z0, z1, y0, y1, x0, x1])",
    ),
    (
        "INFERENCE.PAD_SIZE",
        lambda cfg, v: v is None or _padding(v),
        "None (DATASET.PAD_SIZE) or 1, 3 or 6 non-negative ints",
    ),
    (
        "MODEL.TARGET_OPT",
        lambda cfg, v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(t, str) for t in v),
        "a list of PyTC target codes, each quoted as a string (TARGET_OPT: ['0'])",
    ),
    (
        "MODEL.LOSS_OPTION",
        lambda cfg, v: isinstance(v, (list, tuple)) and len(v) == len(cfg.MODEL.TARGET_OPT),
        "one list of losses per MODEL.TARGET_OPT target",
    ),
    ("MODEL.WEIGHT_OPT", _per_target, "one list per target, with one weight code per loss of MODEL.LOSS_OPTION"),
    ("MODEL.LOSS_WEIGHT", _per_target, "one list per target, with one weight per loss of MODEL.LOSS_OPTION"),
    ("MODEL.OUTPUT_ACT", _per_target, "one list per target, with one activation per loss of MODEL.LOSS_OPTION"),
    (
        "MODEL.ARCHITECTURE",
        lambda cfg, v: v == "mednext",
        "'mednext' (our engine trains MedNeXt only; PyTorch Connectomics trains the others)",
    ),
    ("MODEL.IN_PLANES", lambda cfg, v: v == 1, "1 (our engine reads single-channel volumes)"),
    ("MODEL.PRE_MODEL_ITER", lambda cfg, v: isinstance(v, int) and v >= 0, "an iteration count of 0 or more"),
    (
        "DATASET.DO_2D",
        lambda cfg, v: not v or list(cfg.MODEL.INPUT_SIZE)[0] == 1,
        "MODEL.INPUT_SIZE [1, y, x] when True (a 2D MedNeXt trains on z planes)",
    ),
    (
        "DATASET.DO_2D",
        lambda cfg, v: not v or (cfg.INFERENCE.INPUT_SIZE is None or list(cfg.INFERENCE.INPUT_SIZE)[0] == 1),
        "INFERENCE.INPUT_SIZE [1, y, x] (or None) when True (a 2D MedNeXt predicts plane by plane)",
    ),
    (
        "DATASET.DO_2D",
        lambda cfg, v: not v or not any(str(t).startswith("2") for t in cfg.MODEL.TARGET_OPT),
        "no affinity target (TARGET_OPT '2') when True (in 2D our engine has no z-affinity to drop)",
    ),
    ("SYSTEM.PARALLEL", lambda cfg, v: v in ("DP", "DDP"), "'DP' or 'DDP'"),
    ("SOLVER.ITERATION_TOTAL", lambda cfg, v: _positive_int(v), "a positive number of iterations"),
    ("SOLVER.BASE_LR", lambda cfg, v: _number(v) and v > 0, "a learning rate above 0"),
    (
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
        lambda cfg, v: not cfg.SOLVER.CLIP_GRADIENTS.ENABLED or (_number(v) and v > 0),
        "a threshold above 0 while clipping is enabled (a negative one would turn the gradients uphill)",
    ),
    (
        "SOLVER.BETAS",
        lambda cfg, v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1) (Adam's beta1 and beta2)",
    ),
    ("SOLVER.MOMENTUM", lambda cfg, v: _number(v) and v >= 0, "a momentum of 0 or more"),
    ("SOLVER.WEIGHT_DECAY", lambda cfg, v: _number(v) and v >= 0, "a weight decay of 0 or more"),
    ("SOLVER.GAMMA", lambda cfg, v: _number(v) and v > 0, "a decay factor above 0"),
    (
        "SOLVER.STEPS",
        lambda cfg, v: _increasing_iterations(v),
        "increasing positive iteration counts, e.g. [30000, 35000]",
    ),
    ("AUGMENTOR.ELASTIC.SIGMA", lambda cfg, v: _number(v) and v > 0, "a smoothness above 0 (pixels)"),
    (
        "AUGMENTOR.CUTBLUR.DOWN_RATIO_MIN",
        lambda cfg, v: _number(v) and 1 <= v <= cfg.AUGMENTOR.CUTBLUR.DOWN_RATIO_MAX,
        "a ratio of at least 1 and at most AUGMENTOR.CUTBLUR.DOWN_RATIO_MAX",
    ),
    ("SOLVER.ITERATION_SAVE", lambda cfg, v: _positive_int(v), "a positive number of iterations between checkpoints"),
    ("SOLVER.ITERATION_VAL", lambda cfg, v: _positive_int(v), "a positive number of iterations between validations"),
    ("SOLVER.SAMPLES_PER_BATCH", lambda cfg, v: _positive_int(v), "a batch of at least 1 sample"),
    ("INFERENCE.SAMPLES_PER_BATCH", lambda cfg, v: _positive_int(v), "a batch of at least 1 window"),
    (
        "MONITOR.ITERATION_NUM",
        lambda cfg, v: len(v) == 2 and all(_positive_int(n) for n in v),
        "two positive iteration counts [scalars, images]",
    ),
    (
        "MONITOR.LOG_OPT",
        lambda cfg, v: len(v) == 3 and all(isinstance(n, int) and n >= 0 for n in v),
        "three non-negative ints [print iteration lines, TensorBoard, text log]",
    ),
    (
        "INFERENCE.OUTPUT_NAME",
        lambda cfg, v: _file_name(v),
        "a file or folder name inside INFERENCE.OUTPUT_PATH (no '/', '..' or absolute path; put folders in "
        "INFERENCE.OUTPUT_PATH)",
    ),
    (
        "INFERENCE.OUTPUT_SIZE",
        _inference_output_size,
        "None or INFERENCE.INPUT_SIZE (our engine predicts whole windows)",
    ),
]


def check_native_values(cfg: CN) -> None:
    """Raise one :class:`ConfigError` for the first value our engine would otherwise have to ignore.

    Args:
        cfg: the loaded config.
    """
    for key, can_honour, needs in NATIVE_VALUE_RULES:
        node = config_value(cfg, key)
        value = list(node) if isinstance(node, (list, tuple)) else node
        if not can_honour(cfg, value):
            raise ConfigError(f"{key} is {value!r}, but our engine needs {needs}.")

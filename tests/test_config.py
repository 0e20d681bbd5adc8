"""add_mednext_config, the native defaults and the shipped YAML configs."""

import glob
import inspect
import os
import re

import pytest
from yacs.config import CfgNode as CN

from connectomics_mednext.build import build_mednext
from connectomics_mednext.config import (
    add_mednext_config,
    check_native_values,
    get_native_defaults,
    mednext_key_defaults,
    mednext_keys,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "MedNeXt-Base.yaml")
TASK_CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml")) if p != BASE)


def _get(cfg: CN, dotted: str):
    for name in dotted.split("."):
        cfg = cfg[name]
    return cfg


def test_every_key_is_added_with_a_comment_in_the_source_and_a_second_call_changes_nothing():
    cfg = add_mednext_config(CN())
    source = inspect.getsource(mednext_keys)
    assert len(mednext_key_defaults()) == len(re.findall(r"^\s*_C\.[\w.]+ = (?!CN\(\))", source, re.M))
    for key, default in mednext_key_defaults():
        assert _get(cfg, key) == default
        # Each assignment carries its comment on its line, or on the lines just above it.
        line = source.index(f"_C.{key} = ")
        before = source[:line].rstrip().splitlines()[-1].strip()
        assert "#" in source[line : source.index("\n", line)] or before.startswith("#"), key
    dump = cfg.dump()
    assert add_mednext_config(cfg).dump() == dump


def test_existing_values_are_kept():
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.MEDNEXT_SIZE = "L"
    assert add_mednext_config(cfg).MODEL.MEDNEXT_SIZE == "L"


@pytest.mark.parametrize(
    "key,value",
    [
        ("MODEL.KERNEL_SIZE", "5"),
        ("MODEL.KERNEL_SIZE", "[1, 5, 5]"),
        ("MODEL.MEDNEXT.EXP_R", "[2, 3, 4, 4, 4, 4, 4, 3, 2]"),
        ("MODEL.MEDNEXT.STRIDES", "[[1, 2, 2], [1, 2, 2], 2, 2]"),
        ("MODEL.MEDNEXT.DS_WEIGHTS", "[1.0, 0.5, 0.0, 0.0, 0.0]"),
        ("MODEL.MEDNEXT.N_CHANNELS", "16"),
        ("MODEL.MEDNEXT.CHECKPOINT_STYLE", "none"),
        ("SOLVER.ADAM_EPS", "0.0001"),
    ],
)
def test_yaml_style_values_merge(key, value):
    cfg = get_native_defaults()
    cfg.merge_from_list([key, value])
    assert _get(cfg, key) is not None


def test_kernel_size_must_keep_one_type_across_merges():
    cfg = get_native_defaults()
    cfg.merge_from_list(["MODEL.KERNEL_SIZE", "5"])
    with pytest.raises(ValueError, match="KERNEL_SIZE"):
        cfg.merge_from_list(["MODEL.KERNEL_SIZE", "[1, 5, 5]"])


def test_unknown_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("MODEL:\n  MEDNEXT:\n    NOT_A_KEY: 1\n")
    with pytest.raises(KeyError, match="NOT_A_KEY"):
        get_native_defaults().merge_from_file(str(path))


@pytest.mark.parametrize("path", TASK_CONFIGS, ids=os.path.basename)
def test_shipped_configs_load_natively_and_build(path):
    cfg = get_native_defaults()
    cfg.merge_from_file(BASE)
    cfg.merge_from_file(path)
    assert cfg.MODEL.ARCHITECTURE == "mednext" and cfg.MODEL.DEEP_SUPERVISION
    check_native_values(cfg)  # our engine can run it as written
    model = build_mednext(cfg)
    assert model.n_classes == cfg.MODEL.OUT_PLANES


def test_base_config_is_the_reference_recipe():
    cfg = get_native_defaults()
    cfg.merge_from_file(BASE)
    solver = cfg.SOLVER
    assert (solver.NAME, solver.LR_SCHEDULER_NAME, solver.BASE_LR) == ("AdamW", "Constant", 1e-3)
    assert (solver.WEIGHT_DECAY, solver.ADAM_EPS) == (3e-5, 1e-4)
    assert solver.CLIP_GRADIENTS.ENABLED and solver.CLIP_GRADIENTS.CLIP_TYPE == "norm"
    assert solver.CLIP_GRADIENTS.CLIP_VALUE == 12.0
    assert cfg.MODEL.DEEP_SUPERVISION


def test_anisotropic_config_keeps_z_in_the_first_levels():
    cfg = get_native_defaults()
    cfg.merge_from_file(BASE)
    cfg.merge_from_file(os.path.join(ROOT, "configs", "SNEMI-Affinity-MedNeXt-Aniso.yaml"))
    model = build_mednext(cfg)
    assert model.total_stride == (4, 16, 16)
    assert model.enc_block_0[0].conv1.kernel_size == (1, 3, 3)

"""build_mednext: config to network, with errors that name the key."""

import pytest
import torch

from connectomics_mednext.build import ConfigError, build_mednext, deep_supervision_weights
from connectomics_mednext.config import get_native_defaults


def tiny_cfg(**overrides):
    cfg = get_native_defaults()
    cfg.merge_from_list(
        [
            "MODEL.ARCHITECTURE",
            "mednext",
            "MODEL.INPUT_SIZE",
            "[32, 32, 32]",
            "MODEL.OUTPUT_SIZE",
            "[32, 32, 32]",
            "MODEL.OUT_PLANES",
            "3",
            "MODEL.MEDNEXT.N_CHANNELS",
            "4",
            "MODEL.MEDNEXT.BLOCK_COUNTS",
            "[1, 1, 1, 1, 1, 1, 1, 1, 1]",
        ]
    )
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def test_eval_output_is_one_full_resolution_tensor_with_out_planes_channels():
    model = build_mednext(tiny_cfg(**{"MODEL.DEEP_SUPERVISION": "True"})).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 32, 32, 32)


def test_preset_and_overrides():
    cfg = tiny_cfg(**{"MODEL.MEDNEXT_SIZE": "M", "MODEL.KERNEL_SIZE": "5", "MODEL.MEDNEXT.CHECKPOINT_STYLE": "none"})
    model = build_mednext(cfg)
    assert model.checkpoint_style is None
    assert model.enc_block_0[0].conv1.kernel_size == (5, 5, 5)
    assert model.stem.out_channels == 4 and len(model.enc_block_0) == 1
    assert build_mednext(tiny_cfg(**{"MODEL.MEDNEXT_SIZE": "M"})).checkpoint_style == "outside_block"


def test_2d_from_dataset_do_2d():
    cfg = tiny_cfg(**{"DATASET.DO_2D": "True", "MODEL.INPUT_SIZE": "[1, 32, 32]", "MODEL.OUTPUT_SIZE": "[1, 32, 32]"})
    model = build_mednext(cfg)
    assert model.dim == "2d"


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.MEDNEXT_SIZE", "X", "MODEL.MEDNEXT_SIZE must be one of"),
        ("MODEL.KERNEL_SIZE", "4", "MODEL.KERNEL_SIZE must be an odd int"),
        ("MODEL.KERNEL_SIZE", "[3, 3]", "MODEL.KERNEL_SIZE"),
        ("MODEL.INPUT_SIZE", "[30, 32, 32]", r"MODEL.INPUT_SIZE \[30, 32, 32\] .*axis z.*16 and 32"),
        ("MODEL.OUTPUT_SIZE", "[16, 16, 16]", "MODEL.OUTPUT_SIZE .*one-voxel bottleneck"),
        ("MODEL.MEDNEXT.CHECKPOINT_STYLE", "inside", "MODEL.MEDNEXT.CHECKPOINT_STYLE"),
        ("MODEL.MEDNEXT.STRIDES", "[2, 2]", "MODEL.MEDNEXT.STRIDES must list 4"),
        ("MODEL.MEDNEXT.EXP_R", "[2, 2]", "MODEL.MEDNEXT.EXP_R"),
        ("MODEL.MEDNEXT.NORM", "batch", "MODEL.MEDNEXT.NORM"),
        ("MODEL.OUT_PLANES", "0", "MODEL.OUT_PLANES"),
    ],
)
def test_invalid_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        build_mednext(tiny_cfg(**{key: value}))


def test_deep_supervision_weights():
    assert deep_supervision_weights(tiny_cfg()) is None
    weights = deep_supervision_weights(tiny_cfg(**{"MODEL.DEEP_SUPERVISION": "True"}))
    assert weights == pytest.approx([16 / 31, 8 / 31, 4 / 31, 2 / 31, 1 / 31])
    custom = tiny_cfg(**{"MODEL.DEEP_SUPERVISION": "True", "MODEL.MEDNEXT.DS_WEIGHTS": "[2.0, 2.0, 0.0, 0.0, 0.0]"})
    assert deep_supervision_weights(custom) == [0.5, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="MODEL.MEDNEXT.DS_WEIGHTS"):
        deep_supervision_weights(tiny_cfg(**{"MODEL.DEEP_SUPERVISION": "True", "MODEL.MEDNEXT.DS_WEIGHTS": "[1.0]"}))

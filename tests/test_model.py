"""MedNeXt behaviour: shapes, presets, deep supervision, checkpointing, anisotropy, errors."""

import gc
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from connectomics_mednext import LayerNorm, MedNeXt, MedNeXtBlock, create_mednext_v1, upkern_load_weights
from connectomics_mednext.model.execution import reference

# Exact reference parameter counts (in_channels 1, n_classes 2, deep supervision, dummy_tensor).
REFERENCE_PARAMS = {
    ("S", 3): 5_552_843,
    ("S", 5): 5_982_475,
    ("B", 3): 10_528_235,
    ("B", 5): 10_957_867,
    ("M", 3): 17_550_891,
    ("M", 5): 18_262_763,
    ("L", 3): 61_781_195,
    ("L", 5): 62_994_827,
}


@pytest.mark.parametrize("size,kernel", sorted(REFERENCE_PARAMS))
def test_preset_parameter_counts_equal_the_reference(size, kernel):
    model = create_mednext_v1(1, 2, size, kernel_size=kernel, deep_supervision=True)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[(size, kernel)]


def test_preset_without_deep_supervision_has_no_extra_heads():
    keys = create_mednext_v1(1, 2, "S").state_dict()
    assert "out_0.conv_out.weight" in keys and not any(k.startswith("out_1") for k in keys)


def test_preset_aliases_and_overrides():
    model = create_mednext_v1(num_channels=3, num_classes=13, size="M", checkpoint_style=None)
    assert model.stem.in_channels == 3 and model.checkpoint_style is None
    assert create_mednext_v1(1, 2, "L").checkpoint_style == "outside_block"
    with pytest.raises(ValueError, match="size must be one of"):
        create_mednext_v1(1, 2, "X")
    with pytest.raises(ValueError, match="alias"):
        create_mednext_v1(1, 2, "S", num_channels=3)


@pytest.mark.parametrize("dim,shape", [("3d", (2, 1, 16, 32, 16)), ("2d", (2, 1, 32, 48))])
@pytest.mark.parametrize("norm_type", ["group", "layer"])
def test_forward_backward_2d_and_3d(dim, shape, norm_type):
    model = MedNeXt(**dict(TINY, dim=dim, norm_type=norm_type, grn=True))
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], 2) + shape[2:]
    out.mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_layer_norm_normalises_channels_in_2d_and_3d():
    for shape in [(2, 6, 5, 7), (2, 6, 3, 5, 7)]:
        x = torch.randn(shape) * 3 + 1
        y = LayerNorm(6)(x)
        reference = F.layer_norm(x.movedim(1, -1), (6,)).movedim(-1, 1)
        assert torch.allclose(y, reference, atol=1e-5)


def test_deep_supervision_output_contract():
    model = MedNeXt(**dict(TINY, deep_supervision=True))
    x = torch.randn(1, 1, 32, 32, 32)
    out = model.train()(x)
    assert isinstance(out, OrderedDict)
    assert list(out) == ["out_0", "out_1", "out_2", "out_3", "out_4"]
    assert [tuple(v.shape[2:]) for v in out.values()] == [(32,) * 3, (16,) * 3, (8,) * 3, (4,) * 3, (2,) * 3]
    model.eval()
    with torch.no_grad():
        single = model(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 2, 32, 32, 32)
    with torch.no_grad():
        trained_mode_full = model.train()(x)["out_0"]
    assert torch.allclose(single, trained_mode_full, atol=1e-6)


def test_list_mode_restores_the_reference_behaviour():
    model = MedNeXt(**dict(TINY, deep_supervision=True, ds_output="list"))
    x = torch.randn(1, 1, 32, 32, 32)
    assert isinstance(model.train()(x), list)
    with torch.no_grad():
        out = model.eval()(x)
    assert isinstance(out, list) and len(out) == 5


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointing_gives_the_same_outputs_and_gradients():
    plain = MedNeXt(**dict(TINY, deep_supervision=True, grn=True))
    checkpointed = MedNeXt(**dict(TINY, deep_supervision=True, grn=True, checkpoint_style="outside_block"))
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    losses = []
    for model in (plain, checkpointed):
        out = model.train()(x)
        loss = sum((v**2).mean() for v in out.values())
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1])
    g_plain, g_ckpt = _grads(plain), _grads(checkpointed)
    assert set(g_plain) == set(g_ckpt) and len(g_plain) > 50
    for name in g_plain:
        assert torch.allclose(g_plain[name], g_ckpt[name], atol=1e-6, rtol=1e-4), name


def test_checkpointing_is_skipped_in_eval_and_without_grad(monkeypatch):
    model = MedNeXt(**dict(TINY, checkpoint_style="outside_block"))
    calls = []
    original = reference.checkpoint
    monkeypatch.setattr(reference, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    x = torch.randn(1, 1, 16, 16, 32)
    model.eval()(x)
    with torch.no_grad():
        model.train()(x)
    assert calls == []
    model.train()(x)
    assert len(calls) == sum(TINY["block_counts"]) + 8  # every block, down and up


def test_dummy_tensor_is_kept_but_never_needs_a_gradient():
    model = MedNeXt(**dict(TINY, checkpoint_style="outside_block"))
    assert "dummy_tensor" in model.state_dict()
    assert not model.dummy_tensor.requires_grad


def test_ddp_needs_no_find_unused_parameters(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(MedNeXt(**dict(TINY, deep_supervision=True)), find_unused_parameters=False)
        for _ in range(2):  # an unused parameter would make the second step raise
            out = model(torch.randn(1, 1, 16, 16, 32))
            sum(v.mean() for v in out.values()).backward()
        # Free DDP's reducer while its process group is alive: destroyed first, gloo's
        # destructor can wait forever on its worker threads.
        del model, out
        gc.collect()
    finally:
        dist.destroy_process_group()


ANISOTROPIC = dict(
    TINY,
    strides=[(1, 2, 2), (1, 2, 2), 2, 2],
    kernel_size=[(1, 3, 3), (1, 3, 3), 3, 3, 3, 3, 3, (1, 3, 3), (1, 3, 3)],
    deep_supervision=True,
)


def test_anisotropic_forward_and_backward():
    model = MedNeXt(**ANISOTROPIC)
    assert model.total_stride == (4, 16, 16)
    assert model.enc_block_0[0].conv1.kernel_size == (1, 3, 3)
    assert model.down_0.conv1.stride == (1, 2, 2) and model.up_0.conv1.stride == (1, 2, 2)
    out = model(torch.randn(1, 1, 8, 32, 32))
    shapes = [tuple(v.shape[2:]) for v in out.values()]
    assert shapes == [(8, 32, 32), (8, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2)]
    sum(v.mean() for v in out.values()).backward()
    assert model.down_0.conv1.weight.grad is not None


def test_per_axis_kernel_for_all_stages():
    model = MedNeXt(**dict(TINY, kernel_size=(3, 5, 5), strides=[(1, 2, 2)] * 2 + [2] * 2))
    assert model.bottleneck[0].conv1.kernel_size == (3, 5, 5)
    assert model(torch.randn(1, 1, 4, 32, 32)).shape == (1, 2, 4, 32, 32)


def test_explicit_default_strides_are_bit_identical():
    default = MedNeXt(**TINY).eval()
    explicit = MedNeXt(**dict(TINY, strides=[(2, 2, 2)] * 4)).eval()
    explicit.load_state_dict(default.state_dict())
    x = torch.randn(1, 1, 32, 16, 16)
    with torch.no_grad():
        assert torch.equal(default(x), explicit(x))


def test_upkern_2d_is_bilinear_and_crosses_deep_supervision():
    source = MedNeXt(**dict(TINY, dim="2d", deep_supervision=True))
    target = MedNeXt(**dict(TINY, dim="2d", kernel_size=5))
    upkern_load_weights(target, source)
    expected = F.interpolate(source.enc_block_0[0].conv1.weight, size=(5, 5), mode="bilinear", align_corners=False)
    assert torch.equal(target.enc_block_0[0].conv1.weight, expected)
    assert torch.equal(target.stem.weight, source.stem.weight)
    with pytest.warns(UserWarning, match="keep their init"):
        upkern_load_weights(MedNeXt(**dict(TINY, kernel_size=5, deep_supervision=True)), MedNeXt(**TINY))


def test_upkern_anisotropic_kernels_from_a_checkpoint_file(tmp_path):
    source = MedNeXt(**dict(TINY, kernel_size=(1, 3, 3)))
    path = tmp_path / "k133.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    target = upkern_load_weights(MedNeXt(**dict(TINY, kernel_size=(3, 5, 5))), path)
    expected = F.interpolate(source.down_1.conv1.weight, size=(3, 5, 5), mode="trilinear", align_corners=False)
    assert torch.equal(target.down_1.conv1.weight, expected)


def test_upkern_rejects_other_class_or_channel_counts():
    with pytest.raises(ValueError, match="out_0.conv_out.*n_classes"):
        upkern_load_weights(MedNeXt(**dict(TINY, n_classes=3)), MedNeXt(**TINY))
    with pytest.raises(ValueError, match="stem.weight"):
        upkern_load_weights(MedNeXt(**dict(TINY, n_channels=8)), MedNeXt(**TINY))


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 1, 24, 32, 32), r"Input size 24 along axis z .*total stride 16.*nearest valid sizes are 16 and 32"),
        ((1, 1, 32, 32, 8), r"Input size 8 along axis x .*nearest valid sizes are 16"),
        ((1, 1, 16, 16, 16), r"one-voxel bottleneck"),
        ((1, 2, 32, 32, 32), r"expects input of shape \(B, 1, \*, \*, \*\)"),
        ((1, 1, 32, 32), r"expects input of shape"),
    ],
)
def test_unusable_input_sizes_raise_a_clear_error(shape, message):
    model = MedNeXt(**dict(TINY))
    with pytest.raises(ValueError, match=message):
        model(torch.randn(shape))


def test_anisotropic_valid_sizes_follow_the_strides():
    model = MedNeXt(**ANISOTROPIC)
    assert model.valid_input_sizes(0, 16) == [4, 8, 12, 16]
    with pytest.raises(ValueError, match=r"Input size 6 along axis z .*total stride 4.*4 and 8"):
        model(torch.randn(1, 1, 6, 32, 32))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kernel_size=4), "positive odd"),
        (dict(kernel_size=(3, 3)), "3 ints"),
        (dict(exp_r=[2, 2]), "exp_r must be"),
        (dict(block_counts=[2] * 8), "block_counts must be 9"),
        (dict(norm_type="batch"), "norm_type must be one of"),
        (dict(dim="4d"), "dim must be one of"),
        (dict(checkpoint_style="inside_block"), "checkpoint_style must be one of"),
        (dict(strides=[2, 2, 2]), "list of 4 values"),
        (dict(ds_output="tuple"), "ds_output must be one of"),
    ],
)
def test_bad_constructor_arguments_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MedNeXt(**dict(TINY, **kwargs))


def test_block_rejects_residual_with_channel_change():
    with pytest.raises(ValueError, match="do_res needs in_channels == out_channels"):
        MedNeXtBlock(4, 8, do_res=True)

"""The CPU fast paths (depthwise, transposed depthwise, pointwise, per-channel norm) match PyTorch."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from connectomics_mednext import MedNeXt
from connectomics_mednext.model import fused
from connectomics_mednext.model.blocks import MedNeXtBlock, MedNeXtDownBlock, MedNeXtUpBlock
from connectomics_mednext.model.depthwise import DepthwiseConv2d, DepthwiseConv3d, DepthwiseConvTranspose3d
from connectomics_mednext.model.norm import PerChannelGroupNorm, _ChannelNormFunction
from connectomics_mednext.model.pointwise import PointwiseConv3d, PointwiseConvTranspose3d
from conftest import TINY

CL = torch.channels_last_3d


def _compare(reference: nn.Module, fast: nn.Module, x: torch.Tensor, atol: float = 1e-5) -> None:
    fast.load_state_dict(reference.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    x_fast = x.detach().clone().requires_grad_()
    y_ref, y_fast = reference(x_ref), fast(x_fast)
    assert y_ref.shape == y_fast.shape
    assert torch.allclose(y_ref, y_fast, atol=atol)
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y_fast.backward(grad)
    assert torch.allclose(x_ref.grad, x_fast.grad, atol=atol)
    for (name, p_ref), p_fast in zip(reference.named_parameters(), fast.parameters()):
        assert torch.allclose(p_ref.grad, p_fast.grad, atol=atol * 10, rtol=1e-4), name


@pytest.mark.parametrize("kernel,stride,shape", [
    (3, 1, (2, 6, 8, 8, 8)), (5, 2, (1, 6, 8, 12, 8)), ((1, 3, 5), (1, 2, 2), (2, 6, 4, 8, 8)), (3, 2, (1, 6, 7, 9, 5)),
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_depthwise_conv_matches_pytorch(kernel, stride, shape, memory_format):
    padding = tuple(k // 2 for k in ((kernel,) * 3 if isinstance(kernel, int) else kernel))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, groups=6)
    x = torch.randn(shape).contiguous(memory_format=memory_format)
    _compare(nn.Conv3d(6, 6, **args), DepthwiseConv3d(6, 6, **args), x)


@pytest.mark.parametrize("kernel,stride,shape", [
    (3, 2, (1, 4, 5, 6, 7)), (5, 2, (2, 3, 4, 4, 5)), ((1, 3, 5), (1, 2, 2), (1, 3, 4, 5, 6)), ((3, 5, 7), (3, 2, 2), (1, 2, 4, 5, 3)),
    (3, 2, (1, 2, 1, 2, 1)),
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_transposed_depthwise_inference_by_phases_matches_pytorch(kernel, stride, shape, memory_format):
    padding = tuple(k // 2 for k in ((kernel,) * 3 if isinstance(kernel, int) else kernel))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, groups=shape[1])
    reference = nn.ConvTranspose3d(shape[1], shape[1], **args)
    fast = DepthwiseConvTranspose3d(shape[1], shape[1], **args)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(shape).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected, got = reference(x), fast(x)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-6)


def test_depthwise_conv_2d_matches_pytorch():
    args = dict(kernel_size=5, padding=2, groups=4)
    _compare(nn.Conv2d(4, 4, **args), DepthwiseConv2d(4, 4, **args), torch.randn(2, 4, 9, 10))


@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), ((1, 3, 3), (1, 2, 2)), ((3, 5, 7), (3, 2, 2))])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_transposed_depthwise_conv_matches_pytorch(kernel, stride, memory_format):
    padding = tuple(k // 2 for k in ((kernel,) * 3 if isinstance(kernel, int) else kernel))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, groups=6)
    x = torch.randn(2, 6, 4, 5, 6).contiguous(memory_format=memory_format)
    _compare(nn.ConvTranspose3d(6, 6, **args), DepthwiseConvTranspose3d(6, 6, **args), x)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
@pytest.mark.parametrize("stride", [1, 2, (1, 2, 2)])
def test_pointwise_convs_match_pytorch(memory_format, stride):
    x = torch.randn(2, 6, 4, 6, 6).contiguous(memory_format=memory_format)
    _compare(nn.Conv3d(6, 10, 1, stride=stride), PointwiseConv3d(6, 10, 1, stride=stride), x)
    _compare(nn.ConvTranspose3d(6, 3, 1, stride=stride), PointwiseConvTranspose3d(6, 3, 1, stride=stride), x)


def test_per_channel_norm_is_precise_and_has_correct_gradients():
    x = (torch.randn(2, 5, 6, 7, 8, dtype=torch.float64) * 3 + 40).contiguous(memory_format=CL).requires_grad_()
    norm = PerChannelGroupNorm(5).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    assert torch.autograd.gradcheck(
        lambda a, w, b: _ChannelNormFunction.apply(a, w, b, 1e-5), (x, norm.weight, norm.bias)
    )
    x32 = x.detach().float().contiguous(memory_format=CL)
    reference = F.group_norm(x.detach().contiguous(), 5, norm.weight.detach(), norm.bias.detach())
    assert (norm.float()(x32).double() - reference).abs().max() < 1e-5


@pytest.mark.parametrize("grn", [False, True])  # without GRN the blocks take the fused pointwise path
def test_channels_last_training_matches_default_layout(grn):
    config = dict(TINY, deep_supervision=True, grn=grn, kernel_size=5)
    default = MedNeXt(**dict(config, channels_last=False))
    fast = MedNeXt(**dict(config, channels_last=True))
    fast.load_state_dict(default.state_dict())
    x = torch.randn(2, 1, 32, 32, 16)
    for model in (default, fast):
        out = model(x)
        sum((v * v).mean() for v in out.values()).backward()
        assert all(v.is_contiguous() for v in out.values())
    out_default, out_fast = default(x), fast(x)
    for key in out_default:
        assert torch.allclose(out_default[key], out_fast[key], atol=1e-5)
    # conv1 biases feed a norm, so their true gradient is 0 and only rounding noise remains.
    for (name, p), q in zip(default.named_parameters(), fast.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-3), name


def test_fused_pointwise_has_exact_gradients(monkeypatch):
    monkeypatch.setattr(fused, "TILE_ROWS", 16)  # several tiles, the last one short
    double = dict(dtype=torch.float64)
    y = (torch.randn(2, 3, 3, 4, 3, **double) * 3 + 20).contiguous(memory_format=CL).requires_grad_()
    residual = torch.randn(2, 2, 3, 4, 3, **double).contiguous(memory_format=CL).requires_grad_()
    params = [torch.randn(*shape, **double, requires_grad=True) for shape in ((3,), (3,), (5, 3), (5,), (2, 5), (2,))]
    assert torch.autograd.gradcheck(lambda *a: fused._FusedPointwise.apply(*a, 1e-5), (y, residual, *params))
    assert torch.autograd.gradcheck(lambda *a: fused._FusedPointwise.apply(a[0], None, *a[1:], 1e-5), (y, *params))


@pytest.mark.parametrize("block,out_channels,extra", [
    (MedNeXtBlock, 6, {}), (MedNeXtDownBlock, 12, dict(do_res=True)), (MedNeXtUpBlock, 3, dict(do_res=True)),
    (MedNeXtDownBlock, 12, dict(do_res=False, stride=(1, 2, 2))),
])
def test_fused_blocks_match_op_by_op_blocks(monkeypatch, block, out_channels, extra):
    monkeypatch.setattr(fused, "TILE_ROWS", 128)
    calls = []
    apply = fused._FusedPointwise.apply
    monkeypatch.setattr(fused._FusedPointwise, "apply", lambda *a: calls.append(1) or apply(*a))
    reference = block(6, out_channels, exp_r=3, kernel_size=3, **extra)
    reference._fusable = False
    fast = block(6, out_channels, exp_r=3, kernel_size=3, **extra)
    x = (torch.randn(2, 6, 6, 8, 10) * 2 + 5).contiguous(memory_format=CL)
    _compare(reference, fast, x)
    assert calls, "the fused path was not taken"


def _small_tiles(monkeypatch) -> None:
    """Several tiles per block, the last one short."""
    monkeypatch.setattr(fused, "TILE_ROWS", 128)
    monkeypatch.setattr(fused, "INFERENCE_TILE_ROWS", 128)


def _loaded_pair(block, *args, **kwargs):
    reference = block(*args, **kwargs)
    for p in reference.parameters():
        nn.init.normal_(p, std=0.5)
    reference._fusable = False
    fast = block(*args, **kwargs)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("overwrite_input", [False, True])
def test_inference_block_matches_op_by_op_and_keeps_its_input_unless_told(monkeypatch, overwrite_input):
    _small_tiles(monkeypatch)
    reference, fast = _loaded_pair(MedNeXtBlock, 6, 6, exp_r=3, kernel_size=3)
    x = (torch.randn(2, 6, 6, 8, 10) * 2 + 30).contiguous(memory_format=CL)
    given = x.clone()
    with torch.no_grad():
        expected = reference(x)
        got = fast(given, overwrite_input=overwrite_input)
    assert torch.allclose(got, expected, atol=1e-5)
    assert (got.data_ptr() == given.data_ptr()) == overwrite_input
    if not overwrite_input:
        assert torch.equal(given, x)


@pytest.mark.parametrize("do_res", [False, True])
def test_inference_down_block_matches_op_by_op(monkeypatch, do_res):
    _small_tiles(monkeypatch)
    reference, fast = _loaded_pair(MedNeXtDownBlock, 6, 12, exp_r=3, kernel_size=3, do_res=do_res)
    x = (torch.randn(2, 6, 6, 8, 10) * 2 + 30).contiguous(memory_format=CL)
    with torch.no_grad():
        assert torch.allclose(fast(x), reference(x), atol=1e-5)


@pytest.mark.parametrize("do_res,stride", [(True, 2), (False, 2), (True, (1, 2, 2))])
def test_up_block_adds_into_the_skip_as_skip_plus_block(monkeypatch, do_res, stride):
    _small_tiles(monkeypatch)
    reference, fast = _loaded_pair(MedNeXtUpBlock, 12, 6, exp_r=2, kernel_size=3, do_res=do_res, stride=stride)
    x = torch.randn(2, 12, 3, 4, 5).contiguous(memory_format=CL)
    with torch.no_grad():
        expected_shape = reference(x).shape
        skip = torch.randn(expected_shape).contiguous(memory_format=CL)
        expected = skip + reference(x)
        got = fast.add_to(skip.clone(), x)
    assert torch.allclose(got, expected, atol=1e-5)
    # With autograd the skip is left alone and the sum is a new tensor.
    kept = skip.clone()
    summed = fast.add_to(kept, x)
    assert torch.equal(kept, skip) and torch.allclose(summed, expected, atol=1e-5)


def test_network_inference_equals_the_autograd_forward_at_every_head():
    model = MedNeXt(**dict(TINY, deep_supervision=True, ds_output="list"), channels_last=True).eval()
    x = torch.randn(2, 1, 32, 32, 16)
    given = x.clone()
    with torch.no_grad():
        inference = model(given)
    autograd = model(x)
    assert torch.equal(given, x)
    assert len(inference) == len(autograd) == 5
    for a, b in zip(inference, autograd):
        assert torch.allclose(a, b, atol=1e-5)


def test_up_block_add_to_under_autocast_keeps_the_promoted_sum():
    up = MedNeXtUpBlock(8, 4, exp_r=2, kernel_size=3, do_res=True).eval()
    x = torch.randn(1, 8, 4, 4, 4)
    skip = torch.randn(1, 4, 8, 8, 8).bfloat16()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = skip + up(x)
        got = up.add_to(skip.clone(), x)
    assert got.dtype == expected.dtype == torch.float32
    assert torch.equal(got, expected)

"""Every path of the CPU execution (kernels, fused blocks, in-place inference) matches the plain modules."""

import copy
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from torch import nn

from connectomics_mednext import MedNeXt
from connectomics_mednext.model.blocks import MedNeXtBlock, MedNeXtDownBlock, MedNeXtUpBlock
from connectomics_mednext.model.execution import CpuExecution, ReferenceExecution, fused, select_execution
from connectomics_mednext.model.execution.depthwise import depthwise_conv
from connectomics_mednext.model.execution.norm import _ChannelNormFunction, normalise
from connectomics_mednext.model.execution.pointwise import pointwise_conv, pointwise_conv_transpose

CL = torch.channels_last_3d
FastPath = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _compare(reference: nn.Module, fast_path: FastPath, x: torch.Tensor, atol: float = 1e-5) -> None:
    """``fast_path(module, x)`` against ``module(x)`` on two copies of one module: outputs and gradients."""
    fast = copy.deepcopy(reference)
    x_ref = x.detach().clone().requires_grad_()
    x_fast = x.detach().clone().requires_grad_()
    y_ref, y_fast = reference(x_ref), fast_path(fast, x_fast)
    assert y_ref.shape == y_fast.shape
    assert torch.allclose(y_ref, y_fast, atol=atol)
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y_fast.backward(grad)
    assert torch.allclose(x_ref.grad, x_fast.grad, atol=atol)
    for (name, p_ref), p_fast in zip(reference.named_parameters(), fast.parameters()):
        assert torch.allclose(p_ref.grad, p_fast.grad, atol=atol * 10, rtol=1e-4), name


@pytest.mark.parametrize(
    "kernel,stride,shape",
    [
        (3, 1, (2, 6, 8, 8, 8)),
        (5, 2, (1, 6, 8, 12, 8)),
        ((1, 3, 5), (1, 2, 2), (2, 6, 4, 8, 8)),
        (3, 2, (1, 6, 7, 9, 5)),
    ],
)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_depthwise_conv_matches_pytorch(kernel, stride, shape, memory_format):
    padding = tuple(k // 2 for k in ((kernel,) * 3 if isinstance(kernel, int) else kernel))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, groups=6)
    x = torch.randn(shape).contiguous(memory_format=memory_format)
    _compare(nn.Conv3d(6, 6, **args), depthwise_conv, x)


@pytest.mark.parametrize(
    "kernel,stride,shape",
    [
        (3, 2, (1, 4, 5, 6, 7)),
        (5, 2, (2, 3, 4, 4, 5)),
        ((1, 3, 5), (1, 2, 2), (1, 3, 4, 5, 6)),
        ((3, 5, 7), (3, 2, 2), (1, 2, 4, 5, 3)),
        (3, 2, (1, 2, 1, 2, 1)),
    ],
)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_transposed_depthwise_inference_by_phases_matches_pytorch(kernel, stride, shape, memory_format):
    padding = tuple(k // 2 for k in ((kernel,) * 3 if isinstance(kernel, int) else kernel))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, groups=shape[1])
    conv = nn.ConvTranspose3d(shape[1], shape[1], **args)
    x = torch.randn(shape).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected, got = conv(x), depthwise_conv(conv, x)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-6)


def test_depthwise_conv_2d_matches_pytorch():
    args = dict(kernel_size=5, padding=2, groups=4)
    _compare(nn.Conv2d(4, 4, **args), depthwise_conv, torch.randn(2, 4, 9, 10))


@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), ((1, 3, 3), (1, 2, 2)), ((3, 5, 7), (3, 2, 2))])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_transposed_depthwise_conv_matches_pytorch(kernel, stride, memory_format):
    padding = tuple(k // 2 for k in ((kernel,) * 3 if isinstance(kernel, int) else kernel))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, groups=6)
    x = torch.randn(2, 6, 4, 5, 6).contiguous(memory_format=memory_format)
    _compare(nn.ConvTranspose3d(6, 6, **args), depthwise_conv, x)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
@pytest.mark.parametrize("stride", [1, 2, (1, 2, 2)])
def test_pointwise_convs_match_pytorch(memory_format, stride):
    x = torch.randn(2, 6, 4, 6, 6).contiguous(memory_format=memory_format)
    _compare(nn.Conv3d(6, 10, 1, stride=stride), pointwise_conv, x)
    _compare(nn.ConvTranspose3d(6, 3, 1, stride=stride), pointwise_conv_transpose, x)


def test_per_channel_norm_is_precise_and_has_correct_gradients():
    x = (torch.randn(2, 5, 6, 7, 8, dtype=torch.float64) * 3 + 40).contiguous(memory_format=CL).requires_grad_()
    norm = nn.GroupNorm(5, 5).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    assert torch.autograd.gradcheck(
        lambda a, w, b: _ChannelNormFunction.apply(a, w, b, 1e-5), (x, norm.weight, norm.bias)
    )
    x32 = x.detach().float().contiguous(memory_format=CL)
    reference = F.group_norm(x.detach().contiguous(), 5, norm.weight.detach(), norm.bias.detach())
    assert (normalise(norm.float(), x32).double() - reference).abs().max() < 1e-5


@pytest.mark.parametrize("grn", [False, True])  # without GRN the blocks take the fused pointwise path
def test_cpu_execution_trains_as_the_reference_execution(grn):
    config = dict(TINY, deep_supervision=True, grn=grn, kernel_size=5)
    default = MedNeXt(**dict(config, channels_last=False))
    fast = MedNeXt(**dict(config, channels_last=True))
    x = torch.randn(2, 1, 32, 32, 16)
    assert type(select_execution(default, x)) is ReferenceExecution
    assert type(select_execution(fast, x)) is CpuExecution
    fast.load_state_dict(default.state_dict())
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


@pytest.mark.parametrize(
    "block,out_channels,extra",
    [
        (MedNeXtBlock, 6, {}),
        (MedNeXtDownBlock, 12, dict(do_res=True)),
        (MedNeXtUpBlock, 3, dict(do_res=True)),
        (MedNeXtDownBlock, 12, dict(do_res=False, stride=(1, 2, 2))),
    ],
)
def test_fused_blocks_match_op_by_op_blocks(monkeypatch, block, out_channels, extra):
    monkeypatch.setattr(fused, "TILE_ROWS", 128)
    calls = []
    apply = fused._FusedPointwise.apply
    monkeypatch.setattr(fused._FusedPointwise, "apply", lambda *a: calls.append(1) or apply(*a))
    reference = block(6, out_channels, exp_r=3, kernel_size=3, **extra)
    x = (torch.randn(2, 6, 6, 8, 10) * 2 + 5).contiguous(memory_format=CL)
    _compare(reference, CpuExecution().block, x)
    assert calls, "the fused path was not taken"


def _small_tiles(monkeypatch) -> None:
    """Several tiles per block, the last one short."""
    monkeypatch.setattr(fused, "TILE_ROWS", 128)
    monkeypatch.setattr(fused, "INFERENCE_TILE_ROWS", 128)


def _loaded_block(block, *args, **kwargs) -> nn.Module:
    module = block(*args, **kwargs)
    for p in module.parameters():
        nn.init.normal_(p, std=0.5)
    return module


def test_inference_stage_writes_over_its_input_and_a_lone_block_does_not(monkeypatch):
    _small_tiles(monkeypatch)
    block = _loaded_block(MedNeXtBlock, 6, 6, exp_r=3, kernel_size=3)
    x = (torch.randn(2, 6, 6, 8, 10) * 2 + 30).contiguous(memory_format=CL)
    run = CpuExecution()
    with torch.no_grad():
        expected = block(x)
        given = x.clone()
        kept = run.block(block, given)
        assert torch.allclose(kept, expected, atol=1e-5) and torch.equal(given, x)
        overwritten = run.stage(nn.Sequential(block), given)
    assert torch.allclose(overwritten, expected, atol=1e-5)
    assert overwritten.data_ptr() == given.data_ptr()


@pytest.mark.parametrize("do_res", [False, True])
def test_inference_down_block_matches_op_by_op(monkeypatch, do_res):
    _small_tiles(monkeypatch)
    block = _loaded_block(MedNeXtDownBlock, 6, 12, exp_r=3, kernel_size=3, do_res=do_res)
    x = (torch.randn(2, 6, 6, 8, 10) * 2 + 30).contiguous(memory_format=CL)
    given = x.clone()
    with torch.no_grad():
        assert torch.allclose(CpuExecution().down(block, given), block(x), atol=1e-5)
    assert torch.equal(given, x)  # the down block's input is the skip


@pytest.mark.parametrize("do_res,stride", [(True, 2), (False, 2), (True, (1, 2, 2))])
def test_up_block_adds_into_the_skip_as_skip_plus_block(monkeypatch, do_res, stride):
    _small_tiles(monkeypatch)
    up = _loaded_block(MedNeXtUpBlock, 12, 6, exp_r=2, kernel_size=3, do_res=do_res, stride=stride)
    x = torch.randn(2, 12, 3, 4, 5).contiguous(memory_format=CL)
    run = CpuExecution()
    with torch.no_grad():
        skip = torch.randn(up(x).shape).contiguous(memory_format=CL)
        expected = skip + up(x)
        into = skip.clone()
        got = run.join(into, up, x)
    assert torch.allclose(got, expected, atol=1e-5) and got.data_ptr() == into.data_ptr()
    # With autograd the skip is left alone and the sum is a new tensor.
    kept = skip.clone()
    summed = run.join(kept, up, x)
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


@pytest.mark.parametrize("checkpoint_style", [None, "outside_block"])
def test_cpu_execution_equals_the_reference_in_inference_and_with_checkpointing(checkpoint_style):
    config = dict(
        TINY,
        deep_supervision=True,
        ds_output="list",
        do_res=True,
        do_res_up_down=True,
        checkpoint_style=checkpoint_style,
    )
    reference = MedNeXt(**config, channels_last=False)
    fast = MedNeXt(**config, channels_last=True)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        for a, b in zip(reference.eval()(x), fast.eval()(x)):
            assert torch.allclose(a, b, atol=1e-5)
    reference.train(), fast.train()
    for model in (reference, fast):
        sum((v * v).mean() for v in model(x)).backward()
    for (name, p), q in zip(reference.named_parameters(), fast.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-3), name


def test_up_block_join_under_autocast_keeps_the_promoted_sum():
    up = MedNeXtUpBlock(8, 4, exp_r=2, kernel_size=3, do_res=True).eval()
    x = torch.randn(1, 8, 4, 4, 4)
    skip = torch.randn(1, 4, 8, 8, 8).bfloat16()
    run = CpuExecution()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = run.block(up, x)
        got = run.join(skip.clone(), up, x)
        reference = skip + up(x)
    # The strided res_conv's float32 bias makes the block's output float32: an in-place sum
    # into the bfloat16 skip would round it.
    assert out.dtype == got.dtype == torch.float32
    assert torch.equal(got, skip + out)
    assert torch.allclose(got, reference.float(), atol=0.05)

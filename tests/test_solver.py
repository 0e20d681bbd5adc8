"""Constant and Poly schedulers, their checkpoint state, and the Adam eps preset."""

import math

import pytest
import torch

from connectomics_mednext.config import get_native_defaults
from connectomics_mednext.solver import SCHEDULERS, ConstantLR, PolyLR, set_adam_eps


def optimizer(lr=1e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_constant_keeps_the_base_rate():
    opt = optimizer()
    scheduler = ConstantLR(opt)
    for _ in range(5):
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == 1e-3


def test_poly_decays_to_zero():
    opt = optimizer(1.0)
    scheduler = PolyLR(opt, total_steps=10, power=0.9)
    rates = []
    for _ in range(12):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert rates[0] == 1.0
    assert rates[5] == pytest.approx(0.5**0.9)
    assert rates[10] == 0.0 and rates[11] == 0.0


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_state_survives_weights_only_load(tmp_path, name):
    cfg = get_native_defaults()
    cfg.merge_from_list(["SOLVER.ITERATION_TOTAL", "10"])
    opt = optimizer()
    scheduler = SCHEDULERS[name](cfg, opt)
    for _ in range(3):
        opt.step()
        scheduler.step()
    path = tmp_path / "checkpoint_00003.pth.tar"
    torch.save({"iteration": 3, "lr_scheduler": scheduler.state_dict(), "optimizer": opt.state_dict()}, path)
    state = torch.load(path, weights_only=True)
    resumed_opt = optimizer()
    resumed_opt.load_state_dict(state["optimizer"])
    resumed = SCHEDULERS[name](cfg, resumed_opt)
    resumed.load_state_dict(state["lr_scheduler"])
    for _ in range(2):
        opt.step()
        scheduler.step()
        resumed_opt.step()
        resumed.step()
    assert resumed_opt.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_adam_eps_is_set_only_on_adam_family():
    cfg = get_native_defaults()
    cfg.merge_from_list(["SOLVER.ADAM_EPS", "0.0001"])
    assert set_adam_eps(cfg, optimizer()).param_groups[0]["eps"] == 1e-4
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert "eps" not in set_adam_eps(cfg, sgd).param_groups[0]


def test_warmup_cosine_warms_up_then_decays():
    from connectomics_mednext.solver import WarmupCosineLR

    opt = optimizer(1.0)
    scheduler = WarmupCosineLR(opt, total_steps=100, warmup_factor=0.1, warmup_iters=10)
    rates = []
    for _ in range(101):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1)
    assert rates[5] == pytest.approx((0.1 * 0.5 + 0.5) * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert rates[50] == pytest.approx(0.5) and rates[100] == pytest.approx(0.0, abs=1e-12)


def test_native_solver_rejects_unknown_names():
    from connectomics_mednext.solver import build_native_solver

    cfg = get_native_defaults()
    cfg.merge_from_list(["SOLVER.NAME", "Lion"])
    with pytest.raises(ValueError, match="SOLVER.NAME must be one of"):
        build_native_solver(cfg, torch.nn.Linear(2, 2))
    cfg.merge_from_list(["SOLVER.NAME", "AdamW", "SOLVER.LR_SCHEDULER_NAME", "OneCycle"])
    with pytest.raises(ValueError, match="SOLVER.LR_SCHEDULER_NAME must be one of"):
        build_native_solver(cfg, torch.nn.Linear(2, 2))


def test_native_solver_uses_pytc_weight_decay_groups():
    from connectomics_mednext import MedNeXt
    from connectomics_mednext.solver import build_native_solver

    cfg = get_native_defaults()
    cfg.merge_from_list(
        [
            "SOLVER.NAME",
            "AdamW",
            "SOLVER.LR_SCHEDULER_NAME",
            "Constant",
            "SOLVER.ADAM_EPS",
            "0.0001",
            "SOLVER.WEIGHT_DECAY",
            "0.5",
            "SOLVER.WEIGHT_DECAY_NORM",
            "0.25",
            "SOLVER.WEIGHT_DECAY_BIAS",
            "0.125",
        ]
    )
    model = MedNeXt(1, 4, 2, exp_r=2, kernel_size=3, block_counts=[1] * 9)
    optimizer, _ = build_native_solver(cfg, model)
    decay = {id(group["params"][0]): group["weight_decay"] for group in optimizer.param_groups}
    assert decay[id(model.enc_block_0[0].norm.weight)] == 0.25
    assert decay[id(model.enc_block_0[0].conv2.bias)] == 0.125
    assert decay[id(model.enc_block_0[0].conv2.weight)] == 0.5
    assert id(model.dummy_tensor) not in decay
    assert optimizer.param_groups[0]["eps"] == 1e-4

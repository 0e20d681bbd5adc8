"""Constant and Poly schedulers, their checkpoint state, and the Adam eps preset."""
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

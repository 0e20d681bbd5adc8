"""Weight compatibility with the reference MedNeXt, against golden fixtures."""

import pytest
import torch
from conftest import reference_fixture

from connectomics_mednext import MedNeXt, load_weights, read_checkpoint, upkern_load_weights

MODEL_FIXTURES = ["s_like_k3_ds_c8.pt", "b_like_k5_grn_c8.pt", "s_like_2d_k3_ds_c8.pt"]


@pytest.mark.parametrize("name", MODEL_FIXTURES)
def test_outputs_match_reference_for_every_head(name):
    fixture = reference_fixture(name)
    model = MedNeXt(**fixture["config"], ds_output="list").eval()
    model.load_state_dict(fixture["state_dict"], strict=True)
    with torch.no_grad():
        outputs = model(fixture["input"])
    outputs = outputs if isinstance(outputs, list) else [outputs]
    assert len(outputs) == len(fixture["outputs"])
    for ours, theirs in zip(outputs, fixture["outputs"]):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", MODEL_FIXTURES)
def test_state_dict_keys_and_shapes_are_the_reference_ones(name):
    fixture = reference_fixture(name)
    ours = MedNeXt(**fixture["config"]).state_dict()
    assert list(ours) == list(fixture["state_dict"])
    assert all(ours[k].shape == v.shape for k, v in fixture["state_dict"].items())


def test_default_eval_output_is_the_full_resolution_tensor():
    fixture = reference_fixture("s_like_k3_ds_c8.pt")
    model = MedNeXt(**fixture["config"]).eval()
    model.load_state_dict(fixture["state_dict"])
    with torch.no_grad():
        out = model(fixture["input"])
    assert isinstance(out, torch.Tensor)
    assert (out - fixture["outputs"][0]).abs().max().item() < 1e-5


@pytest.mark.parametrize("suffix", [".model", ".pth"])
def test_reference_checkpoint_file_with_module_prefix_loads(tmp_path, suffix):
    fixture = reference_fixture("b_like_k5_grn_c8.pt")
    path = tmp_path / f"model_final_checkpoint{suffix}"
    wrapped = {f"module.{k}": v for k, v in fixture["state_dict"].items()}
    torch.save({"epoch": 3, "state_dict": wrapped, "optimizer_state_dict": {}}, path)
    model = load_weights(MedNeXt(**fixture["config"]).eval(), path, layout="reference")
    with torch.no_grad():
        out = model(fixture["input"])
    assert (out - fixture["outputs"][0]).abs().max().item() < 1e-5
    assert set(read_checkpoint(path)) == set(fixture["state_dict"])


def test_mismatched_checkpoint_lists_missing_unexpected_and_misshaped_keys():
    fixture = reference_fixture("s_like_k3_ds_c8.pt")
    config = dict(fixture["config"], deep_supervision=False, n_classes=3)
    state = dict(fixture["state_dict"])
    state["extra.weight"] = torch.zeros(1)
    del state["stem.bias"]
    with pytest.raises(ValueError) as info:
        load_weights(MedNeXt(**config), state, layout="reference")
    message = str(info.value)
    assert "missing keys: stem.bias" in message
    assert "unexpected keys:" in message and "extra.weight" in message and "out_4.conv_out.weight" in message
    assert "mis-shaped keys: out_0.conv_out.weight (model (8, 3, 1, 1, 1), checkpoint (8, 2, 1, 1, 1))" in message
    assert "out_0.conv_out.bias (model (3,), checkpoint (2,))" in message


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        read_checkpoint(tmp_path / "nope.model")


class PlotStuff:
    """Stands in for the Python objects nnU-Net pickles beside the weights."""


def test_checkpoint_with_pickled_objects_needs_explicit_trust(tmp_path):
    fixture = reference_fixture("s_like_k3_ds_c8.pt")
    path = tmp_path / "nnunet.model"
    torch.save({"state_dict": fixture["state_dict"], "plot_stuff": PlotStuff()}, path)
    with pytest.raises(ValueError, match="weights_only=False"):
        read_checkpoint(path)
    assert set(read_checkpoint(path, weights_only=False)) == set(fixture["state_dict"])


def test_upkern_reproduces_the_reference_fixture():
    fixture = reference_fixture("upkern_k3_to_k5_c8.pt")
    target = MedNeXt(**fixture["dst_config"])
    target.load_state_dict(fixture["dst_init_state_dict"])
    upkern_load_weights(target, fixture["src_state_dict"])
    result = target.state_dict()
    for key, expected in fixture["dst_result_state_dict"].items():
        assert (result[key] - expected).abs().max().item() < 1e-6, key

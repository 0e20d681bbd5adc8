"""Targets and weights from labels, on hand-made examples."""

import numpy as np
import pytest

from connectomics_mednext.data.targets import balance_weight, make_target, target_channels


def test_binary_target():
    label = np.array([[[0, 3], [5, 0]]])
    assert make_target(label, "0").tolist() == [[[[0.0, 1.0], [1.0, 0.0]]]]


def test_affinities_link_equal_nonzero_neighbours():
    label = np.array([[[1, 1, 2, 0]]])  # one z plane, one row
    affinity = make_target(label, "2")
    assert affinity.shape == (3, 1, 1, 4)
    assert affinity[2, 0, 0].tolist() == [0.0, 1.0, 0.0, 0.0]  # x: only 1-1
    assert affinity[0].sum() == 0 and affinity[1].sum() == 0


def test_boundaries_mark_both_sides_of_an_id_change():
    label = np.array([[[1, 1, 2, 2]]])
    assert make_target(label, "4-1-1")[0, 0, 0].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_semantic_target_has_no_channel_axis():
    label = np.array([[[0, 2], [1, 0]]], dtype=np.uint16)
    target = make_target(label, "9-3")
    assert target.dtype == np.int64 and target.shape == (1, 2, 2)
    assert target_channels("9-3") == 3 and target_channels("2") == 3


@pytest.mark.parametrize(
    "code,message", [("7", r"^target_opt must be one of \[.0., .2., .4., .9.\], got .7."), ("9", "class count")]
)
def test_unsupported_codes_are_named(code, message):
    with pytest.raises(ValueError, match=message):
        make_target(np.zeros((1, 2, 2)), code)


def test_balance_weight_gives_equal_total_weight():
    target = np.array([1.0, 0.0, 0.0, 0.0])
    weight = balance_weight(target)
    assert weight[target > 0].sum() == pytest.approx(weight[target == 0].sum())
    assert balance_weight(np.zeros(3)).tolist() == [1.0, 1.0, 1.0]

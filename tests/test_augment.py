"""Training augmentation from PyTC's AUGMENTOR keys: seeded, label-consistent, each P honoured."""

import numpy as np
import pytest
import torch

from connectomics_mednext.config import get_native_defaults
from connectomics_mednext.data import augment as aug
from connectomics_mednext.data.sampler import CropSampler
from connectomics_mednext.errors import ConfigError

GEOMETRIC = ("ROTATE", "RESCALE", "FLIP", "ELASTIC", "MISSINGSECTION", "MISALIGNMENT")
IMAGE_ONLY = ("GRAYSCALE", "MISSINGPARTS", "MOTIONBLUR", "CUTBLUR", "CUTNOISE")


def augmentor(*enabled, **settings):
    """PyTC's AUGMENTOR defaults with only ``enabled`` on; ``settings`` as 'NODE__KEY': value."""
    node = get_native_defaults().AUGMENTOR.clone()
    for name in aug.AUGMENTATIONS:
        node[name].ENABLED = name in enabled
    for key, value in settings.items():
        name, field = key.split("__")
        node[name][field] = value
    return node


def volume(shape=(12, 48, 48)):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    label = np.arange(np.prod(shape), dtype=np.int64).reshape(shape) + 1
    return image, label


def test_the_defaults_are_pytcs_and_every_implemented_node_is_on():
    node = get_native_defaults().AUGMENTOR
    assert node.ENABLED and not node.COPYPASTE.ENABLED
    assert [name for name in aug.AUGMENTATIONS if node[name].ENABLED] == list(aug.AUGMENTATIONS)
    assert (node.ROTATE.P, node.RESCALE.P, node.ELASTIC.P, node.ELASTIC.ALPHA, node.MISSINGPARTS.ITER) == (
        1.0,
        0.5,
        0.75,
        16.0,
        64,
    )
    # As PyTC's Compose: 32 * 1.25 for the rescale, + 2 * 17 for the elastic, + 2 * 8 for the
    # misalignment in y and x; + 2 * 1 for the missing sections in z (34 x 130 x 130 around 32 x 64 x 64).
    assert aug.Augmenter(node).sample_size((16, 32, 32)) == (18, 90, 90)
    assert aug.Augmenter(node).sample_size((32, 64, 64)) == (34, 130, 130)


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometry_moves_image_label_and_mask_together(name):
    image, label = volume()
    lookup = {}
    for key, value in zip(label.ravel().tolist(), image.ravel().tolist()):
        lookup[key] = value
    node = augmentor(name)[name]
    for seed in range(6):
        arrays = aug.AUGMENTATIONS[name].transform(
            np.random.default_rng(seed), [image, label, label.astype(np.float32)], node
        )
        out_image, out_label, out_mask = arrays
        assert np.array_equal(out_mask, out_label.astype(np.float32))
        # Where the label keeps a source voxel (not an interpolated border), the image is near that voxel's.
        kept = out_label > 0
        if name in ("FLIP", "MISSINGSECTION") or (name == "ROTATE" and node.ROT90):
            source = np.vectorize(lookup.get)(out_label[kept])
            assert np.allclose(out_image[kept], source)
        assert out_label.dtype == label.dtype and set(np.unique(out_label[kept])) <= set(lookup)


@pytest.mark.parametrize("name", IMAGE_ONLY)
def test_image_only_augmentations_keep_the_unit_range_and_leave_labels(name):
    image, label = volume()
    out = aug.AUGMENTATIONS[name].transform(np.random.default_rng(1), [image, label, None], augmentor(name)[name])
    assert out[1] is label and out[0].shape == image.shape
    assert out[0].min() >= 0.0 and out[0].max() <= 1.0 and not np.array_equal(out[0], image)


def test_same_seed_same_crops_and_another_seed_others():
    image, label = volume()
    augmenter = aug.Augmenter(get_native_defaults().AUGMENTOR)
    size = (8, 16, 16)
    crops = [augmenter(np.random.default_rng(seed), [image, label, None], size) for seed in (3, 3, 4)]
    assert all(c.shape == size for c in crops[0][:2])
    assert np.array_equal(crops[0][0], crops[1][0]) and np.array_equal(crops[0][1], crops[1][1])
    assert not np.array_equal(crops[0][0], crops[2][0])


@pytest.mark.parametrize("name", list(aug.AUGMENTATIONS))
def test_each_p_is_honoured(name, monkeypatch):
    """Every augmentation runs in a share P of the crops, within four standard errors."""
    p = 0.3
    node = augmentor(name, **{f"{name}__P": p})
    calls = []
    original = aug.AUGMENTATIONS[name]
    counted = aug.Augmentation(lambda *a: calls.append(1) or original.transform(*a), original.margin, original.needs_3d)
    monkeypatch.setitem(aug.AUGMENTATIONS, name, counted)
    augmenter = aug.Augmenter(node)
    image, label = volume((8, 24, 24))
    size = (4, 8, 8)
    read = augmenter.sample_size(size)
    image, label = np.resize(image, read).astype(np.float32), np.resize(label, read)
    rng = np.random.default_rng(0)
    trials = 300
    for _ in range(trials):
        augmenter(rng, [image, label, None], size)
    assert abs(len(calls) / trials - p) < 4 * np.sqrt(p * (1 - p) / trials)


def test_a_geometric_augmentation_changes_what_it_is_given():
    image, label = volume((8, 16, 16))
    augmenter = aug.Augmenter(augmentor("FLIP", FLIP__P=1.0))
    changed = sum(
        not np.array_equal(augmenter(np.random.default_rng(s), [image, label, None], image.shape)[0], image)
        for s in range(64)
    )
    assert changed > 48  # a crop is left as it was only when no flip and no transpose is drawn (1 in 16)


def test_augmentor_enabled_false_turns_augmentation_off():
    node = get_native_defaults().AUGMENTOR.clone()
    node.ENABLED = False
    augmenter = aug.Augmenter(node)
    image, label = volume((8, 16, 16))
    out = augmenter(np.random.default_rng(0), [image, label, None], image.shape)
    assert augmenter.steps == [] and np.array_equal(out[0], image) and augmenter.sample_size((8, 16, 16)) == (8, 16, 16)


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"COPYPASTE__ENABLED": True}, r"AUGMENTOR\.COPYPASTE\.ENABLED is True, but our engine does not implement"),
        ({"FLIP__SKIP": ["label"]}, r"AUGMENTOR\.FLIP\.SKIP is \['label'\]"),
        ({"FLIP__P": 1.5}, r"AUGMENTOR\.FLIP\.P is 1\.5, but must lie in 0\.\.1"),
    ],
)
def test_what_we_do_not_implement_is_refused_by_name(setting, message):
    node = augmentor("FLIP", "COPYPASTE" if "COPYPASTE__ENABLED" in setting else "FLIP", **setting)
    with pytest.raises(ConfigError, match=message):
        aug.Augmenter(node)
    disabled = augmentor()  # COPYPASTE present but off: accepted
    assert aug.Augmenter(disabled).steps == []


def test_the_sampler_reads_the_enlarged_crop_and_returns_the_input_size(tmp_path):
    import h5py

    image, label = volume((20, 40, 40))
    for name, data in (("image", (image * 255).astype(np.uint8)), ("label", label)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f.create_dataset("main", data=data)
    cfg = get_native_defaults()
    cfg.merge_from_list(
        [
            "DATASET.INPUT_PATH",
            str(tmp_path),
            "DATASET.IMAGE_NAME",
            "image.h5",
            "DATASET.LABEL_NAME",
            "label.h5",
            "DATASET.PAD_SIZE",
            "[0, 0, 0]",
            "MODEL.INPUT_SIZE",
            "[8, 32, 32]",
        ]
    )
    sampler = CropSampler(cfg, seed=1)
    assert sampler.read_size == aug.Augmenter(cfg.AUGMENTOR).sample_size((8, 32, 32))
    assert sampler.images[0].shape[1] >= sampler.read_size[1]  # padded further for the margins
    images, targets, _ = sampler.sample(2)
    assert images.shape == (2, 1, 8, 32, 32) and targets[0].shape[-3:] == (8, 32, 32)
    again = CropSampler(cfg, seed=1).sample(2)[0]
    assert torch.equal(images, again)


def test_other_additional_targets_are_refused():
    node = augmentor("FLIP")
    node.ADDITIONAL_TARGETS_NAME = ["label", "affinity"]
    with pytest.raises(ConfigError, match=r"AUGMENTOR\.ADDITIONAL_TARGETS_NAME and _TYPE must stay"):
        aug.Augmenter(node)


@pytest.mark.parametrize("name", ["rotate", "rescale", "elastic", "misalignment"])
def test_instance_ids_above_2_to_the_53_come_through_exactly(name):
    augmentor = get_native_defaults().AUGMENTOR
    augmentor.defrost()
    augmentor.ROTATE.ROT90 = False  # any angle: labels are resampled, not turned
    augmentor.MISALIGNMENT.ROTATE_RATIO = 1.0
    rng = np.random.default_rng(0)
    base = np.uint64(2**60)  # MICrONS-style ids: neighbours are equal as float64
    ids = base + rng.integers(1, 9, (8, 32, 32)).astype(np.uint64)
    image = rng.random((8, 32, 32)).astype(np.float32)
    for seed in range(5):
        node = augmentor[name.upper()]
        _, label, mask = getattr(aug, name)(np.random.default_rng(seed), [image, ids, None], node)
        assert label.dtype == np.uint64
        assert set(np.unique(label).tolist()) <= set(np.unique(ids).tolist()) | {0}
        assert len(set(np.unique(label).tolist()) - {0}) > 1

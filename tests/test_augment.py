"""Training augmentation: seeded, label-consistent geometry, image-only intensity and artefacts."""
import numpy as np

from connectomics_mednext.data import augment as aug


def volume(shape=(8, 16, 16)):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    label = np.arange(np.prod(shape)).reshape(shape)
    return image, label


def test_same_seed_same_result():
    image, label = volume()
    a = aug.augment(np.random.default_rng(5), image, label, None, isotropic=True)
    b = aug.augment(np.random.default_rng(5), image, label, None, isotropic=True)
    assert all((x is None and y is None) or np.array_equal(x, y) for x, y in zip(a, b))


def test_geometry_moves_image_label_and_mask_together():
    image, label = volume((8, 8, 8))
    lookup = dict(zip(label.ravel().tolist(), image.ravel().tolist()))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        arrays = [image, label, label.astype(np.float32)]
        for name in ("flip", "rotate_xy", "transpose_z", "misalignment"):
            arrays = aug.AUGMENTATIONS[name][0](rng, arrays, True)
        out_image, out_label, out_mask = arrays
        assert np.array_equal(out_mask, out_label.astype(np.float32))
        assert all(lookup[k] == v for k, v in zip(out_label.ravel().tolist(), out_image.ravel().tolist()))


def test_z_is_never_transposed_on_anisotropic_data():
    image, label = volume((8, 8, 8))
    for seed in range(20):
        out = aug.transpose_z(np.random.default_rng(seed), [image, label, None], isotropic=False)
        assert out[1] is label


def test_intensity_keeps_the_unit_range_and_leaves_labels():
    image, label = volume()
    out = aug.intensity(np.random.default_rng(1), [image, label, None], False)
    assert out[0].min() >= 0.0 and out[0].max() <= 1.0 and out[1] is label


def test_missing_section_and_motion_blur_touch_one_section_of_the_image_only():
    image, label = volume()
    for transform in (aug.missing_section, aug.motion_blur):
        out = transform(np.random.default_rng(2), [image, label, None], False)
        changed = [z for z in range(image.shape[0]) if not np.array_equal(out[0][z], image[z])]
        assert len(changed) == 1 and out[1] is label

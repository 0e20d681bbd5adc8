"""Placeholder for ``rotate``, which only PyTC's copy-paste augmentation uses."""


def rotate(*args, **kwargs):
    raise RuntimeError(
        "torchvision is replaced by an import stand-in here; PyTC's copy-paste augmentation "
        "(AUGMENTOR.COPYPASTE) needs the real torchvision.transforms.functional.rotate."
    )

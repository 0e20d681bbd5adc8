"""Connected components of a thresholded map, slab by slab, with labels stitched across slab faces.

Each z slab is labelled on its own by connected-components-3d, with ids made unique by an
offset. Objects that touch across a face between two slabs are joined in a union-find over
the provisional ids, small objects are dropped, and a second pass writes the final,
consecutive ids. Peak memory is one slab's labels plus tables of one entry per provisional
id, whatever the depth of the volume; the partition of voxels equals that of labelling the
whole volume at once (tested).
"""

from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np

from ..errors import import_extra

# connectivity -> the (dy, dx) offsets of the neighbours across a z face of a voxel.
FACE_NEIGHBOURS: Dict[int, List[Tuple[int, int]]] = {
    6: [(0, 0)],
    18: [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)],
    26: [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
}
SEGMENT_EXTRA = "pip install connectomics-mednext[segment]"


def import_cc3d():
    """The cc3d module, or a :class:`MissingExtraError` naming the extra."""
    return import_extra("cc3d", f"Connected components need connected-components-3d: {SEGMENT_EXTRA}.")


class UnionFind:
    """Disjoint sets over the ids 0..n-1, grown on demand (id 0, the background, stays alone).

    Args:
        size: ids known at the start.
    """

    def __init__(self, size: int = 1) -> None:
        self.parent = np.arange(size, dtype=np.int64)

    def grow(self, size: int) -> None:
        """Make room for ids below ``size``."""
        if size > len(self.parent):
            self.parent = np.concatenate([self.parent, np.arange(len(self.parent), size, dtype=np.int64)])

    def find(self, ids: np.ndarray) -> np.ndarray:
        """The root of each id (vectorised, with path halving)."""
        ids = np.asarray(ids, dtype=np.int64)
        while True:
            parents = self.parent[ids]
            if np.array_equal(parents, ids):
                return ids
            self.parent[ids] = self.parent[parents]
            ids = parents

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join the sets of ``a[i]`` and ``b[i]`` for every i."""
        for x, y in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            root_x, root_y = int(self.find(x)), int(self.find(y))
            if root_x != root_y:
                self.parent[max(root_x, root_y)] = min(root_x, root_y)

    def roots(self) -> np.ndarray:
        """The root of every id."""
        return self.find(np.arange(len(self.parent)))


def face_pairs(below: np.ndarray, above: np.ndarray, connectivity: int) -> np.ndarray:
    """The distinct (id below, id above) pairs of foreground voxels that touch across a z face.

    Args:
        below: the last labelled plane of one slab, (y, x).
        above: the first labelled plane of the next slab, (y, x).
        connectivity: 6, 18 or 26.
    """
    height, width = below.shape
    pairs = []
    for dy, dx in FACE_NEIGHBOURS[connectivity]:
        a = below[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
        b = above[max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)]
        touching = (a > 0) & (b > 0)
        pairs.append(np.stack([a[touching], b[touching]], axis=1))
    joined = np.concatenate(pairs).astype(np.int64)
    return np.unique(joined, axis=0) if len(joined) else joined.reshape(0, 2)


def _slabs(depth: int, planes: int) -> Iterator[Tuple[int, int]]:
    step = depth if planes <= 0 else planes
    for z in range(0, depth, step):
        yield z, min(z + step, depth)


def label_components(
    read_mask: Callable[[int, int], np.ndarray],
    shape: Tuple[int, int, int],
    scratch,
    create_output: Callable[[int], Any],
    connectivity: int = 26,
    min_size: int = 0,
    slab_planes: int = 0,
) -> int:
    """Label the connected components of a boolean volume read slab by slab; return the object count.

    Args:
        read_mask: ``(z0, z1) -> bool array (z1 - z0, y, x)``, the foreground of those planes.
        shape: the volume's (z, y, x) shape.
        scratch: a (z, y, x) int64-capable array (in memory or on disk) for the provisional ids.
        create_output: ``count -> array`` for the final ids 1..count (in order of first voxel),
            called once the count is known, so that its dtype can fit it.
        connectivity: 6 (faces), 18 (and edges) or 26 (and corners).
        min_size: objects with fewer voxels are set to background.
        slab_planes: planes labelled at a time; 0 labels the whole volume at once.
    """
    cc3d = import_cc3d()
    merges = UnionFind()
    sizes = [np.zeros(1, dtype=np.int64)]
    offset, last_plane = 0, None
    for z0, z1 in _slabs(shape[0], slab_planes):
        local, count = cc3d.connected_components(
            np.ascontiguousarray(read_mask(z0, z1)), connectivity=connectivity, return_N=True, out_dtype=np.uint64
        )
        labels = np.where(local > 0, local.astype(np.int64) + offset, 0)
        merges.grow(offset + count + 1)
        sizes.append(np.bincount(labels.ravel(), minlength=offset + count + 1)[offset + 1 :])
        if last_plane is not None:
            pairs = face_pairs(last_plane, labels[0], connectivity)
            merges.union(pairs[:, 0], pairs[:, 1])
        scratch[z0:z1] = labels
        last_plane, offset = labels[-1], offset + count
    roots = merges.roots()
    object_sizes = np.bincount(roots, weights=np.concatenate(sizes), minlength=len(roots))
    kept = (object_sizes >= max(1, min_size)) & (np.arange(len(roots)) > 0)
    kept_roots = np.flatnonzero(kept)
    final = np.zeros(len(roots), dtype=np.int64)
    final[kept_roots] = np.arange(1, len(kept_roots) + 1)
    lookup = final[roots]
    output = create_output(len(kept_roots))
    for z0, z1 in _slabs(shape[0], slab_planes):
        output[z0:z1] = lookup[np.asarray(scratch[z0:z1], dtype=np.int64)]
    return len(kept_roots)

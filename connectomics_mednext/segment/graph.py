"""The one global step of decoding: join fragments across block faces, drop small objects, number the rest.

Its memory grows with the number of fragments and contacts, never with voxels: per fragment
its id, voxel count, component and final id (about 40 bytes with the sort's scratch), per
contact its pair, score sum and count (about 40 bytes).
"""

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import import_extra
from .components import SEGMENT_EXTRA
from .contacts import Contacts
from .decoders import Decoder, SegmentOptions


@dataclass
class Relabelling:
    """Fragment id -> final object id (0 for background and dropped objects).

    Args:
        fragment_ids: every fragment id, sorted (uint64).
        object_ids: the final id of each (int64).
        count: the number of objects, numbered 1..count.
    """

    fragment_ids: np.ndarray
    object_ids: np.ndarray
    count: int

    def apply(self, fragments: np.ndarray) -> np.ndarray:
        """The object ids of a block of fragment ids (0 stays 0).

        Args:
            fragments: fragment ids (uint64), any shape.
        """
        if len(self.fragment_ids) == 0:
            return np.zeros(fragments.shape, dtype=np.int64)
        flat = fragments.ravel()
        found = np.minimum(np.searchsorted(self.fragment_ids, flat), len(self.fragment_ids) - 1)
        objects = np.where(self.fragment_ids[found] == flat, self.object_ids[found], 0)
        return objects.reshape(fragments.shape)


def merge_fragments(
    fragment_ids: np.ndarray,
    voxel_counts: np.ndarray,
    parts: Sequence[Contacts],
    decoder: Decoder,
    options: SegmentOptions,
) -> Relabelling:
    """Join the touching fragments that the mode's rule accepts, drop objects under ``min_size``, number the rest.

    Objects are numbered in the order of their first fragment id, which is block order and,
    within a block, the order of first voxels: for one block, the order of first voxels.

    Args:
        fragment_ids: every fragment's id (uint64, unique).
        voxel_counts: its voxel count.
        parts: each block's contacts across its faces; a pair found by two blocks is added up here.
        decoder: the mode.
        options: its options.
    """
    csgraph = import_extra("scipy.sparse.csgraph", f"Joining fragments needs scipy: {SEGMENT_EXTRA}.")
    sparse = import_extra("scipy.sparse", f"Joining fragments needs scipy: {SEGMENT_EXTRA}.")
    order = np.argsort(fragment_ids, kind="stable")
    ids = np.asarray(fragment_ids, dtype=np.uint64)[order]
    counts = np.asarray(voxel_counts, dtype=np.int64)[order]
    contacts = Contacts.joined(parts)
    joined = decoder.joins(contacts.score_sums / np.maximum(contacts.voxel_pairs, 1), options)
    a = np.searchsorted(ids, contacts.pairs[joined, 0])
    b = np.searchsorted(ids, contacts.pairs[joined, 1])
    size = len(ids)
    graph = sparse.coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(size, size))
    _, components = csgraph.connected_components(graph, directed=False)
    sizes = np.bincount(components, weights=counts, minlength=size)
    first = np.full(size, size, dtype=np.int64)
    np.minimum.at(first, components, np.arange(size))
    kept = np.flatnonzero(sizes >= max(1, options.min_size))
    kept = kept[np.argsort(first[kept], kind="stable")]
    final = np.zeros(size, dtype=np.int64)
    final[kept] = np.arange(1, len(kept) + 1)
    return Relabelling(ids, final[components], len(kept))

"""Images of a data set's tweets, resized and kept in memory, for the detector and the grounder.

:func:`load_image_set` reads the images of some samples once (an unreadable image is skipped and
reported, never silently); :meth:`ImageSet.batch` gives float batches on a device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mnerqg_graph.data.types import Sample
from mnerqg_graph.errors import DataError


@dataclass
class ImageSet:
    """The images of some samples, resized and kept in memory as bytes.

    Attributes:
        images: the images, uint8 RGB.
        samples: the sample of each image (tweets whose image could not be read are left out).
        skipped: ``"path: reason"`` of the images that could not be read.

    Shapes:
        - images: ``[N, 3, S, S]`` uint8.
    """

    images: Tensor
    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)

    def batch(self, index: Tensor | Sequence[int], device: torch.device | str) -> Tensor:
        """Images ``index`` as float RGB in ``[0, 1]`` on ``device``, ``[len(index), 3, S, S]``."""
        return self.images[torch.as_tensor(index, dtype=torch.long)].to(device).float().div_(255.0)


def load_image_set(samples: Sequence[Sample], size: int) -> ImageSet:
    """Load the images of the samples that have one, resized to ``size`` x ``size``.

    An image that cannot be decoded (e.g. a truncated file whose header was fine) is skipped and
    listed in ``skipped``, never silently.

    Args:
        samples: samples; those with ``image_path is None`` are ignored.
        size: the side in pixels.

    Returns:
        The image set.
    """
    from mnerqg_graph.data.images import load_image

    images, kept, skipped = [], [], []
    for sample in samples:
        if sample.image_path is None:
            continue
        try:
            img = load_image(sample.image_path, size)
        except DataError as err:
            skipped.append(str(err))
            continue
        images.append(img.mul(255.0).round_().to(torch.uint8))
        kept.append(sample)
    stacked = torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return ImageSet(stacked, kept, skipped)


__all__ = ["ImageSet", "load_image_set"]

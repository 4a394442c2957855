"""Tweet images: find them, check them, load them as tensors.

Images are ``<IMGID>.<ext>`` files (``.jpg``, ``.jpeg``, ``.png``, ``.webp``, any case) in one
folder. A missing or unreadable image is never fatal for a data set: the tweet runs text-only.

Large images and PIL's decompression-bomb guard: images up to twice ``PIL.Image.MAX_IMAGE_PIXELS``
(about 179 million pixels by default, so a 10,000 x 10,000 photo) load without a warning; JPEGs are
decoded at a reduced scale with ``Image.draft`` (the DCT scaling of libjpeg), so a huge JPEG costs
little memory and time. Larger images raise :class:`~mnerqg_graph.errors.DataError` naming the file
and its size (PIL's guard is left in place; a user who trusts the files may raise
``PIL.Image.MAX_IMAGE_PIXELS`` before loading). Pixels are read as stored: EXIF orientation is not
applied, so box coordinates refer to the stored pixel grid.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from mnerqg_graph.errors import DataError

if TYPE_CHECKING:  # torch is imported when an image is loaded, so check-data starts fast
    import torch

#: Accepted image file extensions (matched case-insensitively), in order of preference.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")


@contextmanager
def _open(path: str | Path) -> Iterator[Image.Image]:
    """Open an image, turning every failure into a one-line :class:`DataError`."""
    spath = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise DataError(spath, "image file not found") from None
    except Image.DecompressionBombError as err:
        raise DataError(
            spath, f"image too large for PIL's decompression-bomb limit: {err}"
        ) from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three on bad files
        raise DataError(spath, f"unreadable image: {err}") from None
    try:
        yield image
    finally:
        image.close()


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey image scaled to 8 bits (mode ``L``).

    PIL's ``convert("RGB")`` clips these modes at 255, which turns a 16-bit image almost white.
    ``I;16*`` is scaled from 0..65535; ``I`` and ``F`` from the range their largest value says
    (0..1 for a float image up to 1, else 0..255, else 0..65535, else 0..max); negatives, NaN
    and infinities are 0.
    """
    import numpy as np

    values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if image.mode.startswith("I;16"):
        full = 65535.0
    else:
        top = float(values.max()) if values.size else 0.0
        full = next((f for f in (1.0, 255.0, 65535.0) if top <= f), top)
        if image.mode != "F" and full == 1.0:
            full = 255.0  # an integer image up to 1 is a dark 8-bit one, not a 0..1 one
    scaled = np.clip(values * (255.0 / max(full, 1e-12)), 0.0, 255.0).round().astype(np.uint8)
    return Image.fromarray(scaled)


def _decode(image: Image.Image, path: str | Path, size: int | None) -> Image.Image:
    """Decode pixels (at reduced scale for a JPEG when ``size`` allows) as RGB on white."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if image.format == "JPEG" and size is not None:
                image.draft("RGB", (size, size))
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info
            ):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            if image.mode.startswith("I") or image.mode == "F":  # wider than 8 bits a pixel
                return _to_8bit(image).convert("RGB")
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(str(path), f"unreadable image: {err}") from None


def probe_image(path: str | Path, verify: bool = True) -> tuple[int, int]:
    """The ``(width, height)`` of an image file, checking that it decodes.

    Args:
        path: the image file.
        verify: also decode the pixels (a JPEG at 1/8 scale, which is fast) so that a truncated
            file is caught; False reads only the header.

    Returns:
        ``(width, height)`` of the stored image in pixels.

    Raises:
        DataError: the file is missing, not an image (e.g. a text file named ``.jpg``), truncated,
            or too large; the message names the file.
    """
    with _open(path) as image:
        width, height = image.size
        if verify:
            _decode(image, path, size=max(1, min(width, height) // 8))
    return int(width), int(height)


def read_rgb(path: str | Path, side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode an image as the model sees it (8-bit RGB, transparency on white), for drawing.

    Args:
        path: the image file.
        side: the picture is wanted at about this many pixels a side (a JPEG is then decoded at
            a reduced scale); None: full size.

    Returns:
        ``(RGB image, (width, height) of the stored image)``.

    Raises:
        DataError: the file is missing, not an image, truncated or too large (names the file).
    """
    with _open(path) as image:
        size = (int(image.size[0]), int(image.size[1]))
        return _decode(image, path, side), size


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Load an image as an RGB float tensor, resized to ``size`` x ``size``.

    The aspect ratio is not kept (a box ``(x, y)`` in original pixels maps to
    ``(x * size / width, y * size / height)``). Transparent pixels are put on white.

    Args:
        path: the image file.
        size: the side of the output in pixels.

    Returns:
        The image, values in [0, 1].

    Shapes:
        output: ``[3, size, size]``, float32.

    Raises:
        DataError: the file is missing, not an image, truncated or too large (names the file).
    """
    if size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    with _open(path) as image:
        rgb = _decode(image, path, size)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    import numpy as np
    import torch

    array = np.asarray(rgb, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _has_image_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def index_images(images_dir: str | Path) -> dict[str, Path]:
    """Map each image id (file stem) in a folder to its file, in one listing of the folder.

    When one id has several files (``1.jpg`` and ``1.png``), the first extension of
    :data:`IMAGE_EXTENSIONS` wins (then the lowercase spelling, then the name).

    Args:
        images_dir: the folder of ``<IMGID>.<ext>`` files.

    Returns:
        ``{image_id: path}``.

    Raises:
        DataError: the folder does not exist or cannot be listed.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise DataError(str(folder), "image folder does not exist")
    try:
        names = [e.name for e in os.scandir(folder) if _has_image_ext(e.name) and e.is_file()]
    except OSError as err:
        raise DataError(str(folder), f"cannot list the image folder: {err.strerror}") from None

    def rank(name: str) -> tuple[int, bool, str]:
        ext = os.path.splitext(name)[1]
        return IMAGE_EXTENSIONS.index(ext.lower()), ext != ext.lower(), name

    index: dict[str, Path] = {}
    for name in sorted(names, key=rank):
        index.setdefault(os.path.splitext(name)[0], folder / name)
    return index


def find_image(images_dir: str | Path, image_id: str) -> Path | None:
    """The image file of ``image_id`` in ``images_dir``, or None.

    Tries ``<image_id>`` with each of :data:`IMAGE_EXTENSIONS` (any case). For many look-ups in one
    folder, :func:`index_images` lists the folder once.

    Args:
        images_dir: the folder of ``<IMGID>.<ext>`` files.
        image_id: the tweet's IMGID (the file stem, matched exactly).

    Returns:
        The path, or None when there is no such image (or the id could not be a file name).
    """
    if not image_id or "/" in image_id or "\\" in image_id or image_id in (".", ".."):
        return None
    folder = Path(images_dir)
    for ext in IMAGE_EXTENSIONS:
        for spelling in (ext, ext.upper()):
            candidate = folder / f"{image_id}{spelling}"
            if candidate.is_file():
                return candidate
    if not folder.is_dir():
        return None
    prefix = image_id + "."
    matches = [
        e.name
        for e in os.scandir(folder)
        if e.name.startswith(prefix)
        and os.path.splitext(e.name)[0] == image_id
        and _has_image_ext(e.name)
        and e.is_file()
    ]
    if not matches:
        return None
    matches.sort(key=lambda n: (IMAGE_EXTENSIONS.index(os.path.splitext(n)[1].lower()), n))
    return folder / matches[0]

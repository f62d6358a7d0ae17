"""Decode an image file safely and make it a model input (shared by your own image folders,
``predict`` and ``serve``).

Decoding is bounded (:data:`MAX_IMAGE_PIXELS`, checked from the header before the pixels are read)
and serialised (Pillow's decoders are not all thread-safe).

One preprocessing, two styles (:data:`PREPROCESSING`), defined here only; a model records the style
its training images went through (:func:`mnist_sweep.model.saving.preprocessing`) and ``predict``
and ``serve`` apply exactly that one:

- ``mnist``: MNIST's own normalisation, for digits written on a page: grayscale, white ink on
  black (inverted when the border is light), cropped to the ink, scaled into a box of 20/28 of the
  side keeping its aspect ratio, centred by mass. MNIST, IDX, ``.npz`` and CSV data are taken to
  have been through it already; models saved before the style was recorded have it.
- ``resize``: the whole image, for images that fill the frame (your own image folders):
  grayscale (transparent pixels over white), resized to the side, inverted when the border is
  light. :func:`mnist_sweep.data.sources.read_image_folder` makes its training images with
  :func:`resize_image`, so training and serving see the same pixels.

Example:
    >>> preprocess(open_image("shirt.png"), side=28, style="resize").shape
    (784,)
"""

from __future__ import annotations

import re
import struct
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_sweep.errors import InputError

MAX_IMAGE_PIXELS = 40_000_000  # width x height an image may have; a phone photo has 12 megapixels

_DECODE_LOCK = threading.Lock()

_BOX_SHARE = 20 / 28  # MNIST puts each digit in a 20 x 20 box on 28 x 28

_INK_THRESHOLD = 0.25  # of the darkest-to-lightest range: what counts as the digit for cropping

MNIST_STYLE, RESIZE_STYLE = "mnist", "resize"

#: The preprocessing styles (see the module docstring); the first is the default.
PREPROCESSING: tuple[str, ...] = (MNIST_STYLE, RESIZE_STYLE)


class ImageTooLarge(InputError):
    """An image over :data:`MAX_IMAGE_PIXELS`, refused before it was decoded."""


def preprocess(image: Image.Image, side: int = 28, style: str = MNIST_STYLE) -> np.ndarray:
    """An image as a model input: ``side * side`` float32 values in [0, 1], white on black (784 for
    MNIST's 28 x 28), made in ``style`` (one of :data:`PREPROCESSING`, the module docstring says how).

    Raises:
        InputError: an unknown style, or (``mnist``) the image is blank (no ink to find).
    """
    if style == RESIZE_STYLE:
        return resize_image(image, side)[0].reshape(-1).astype(np.float32) / 255.0  # as load_dataset scales
    if style != MNIST_STYLE:
        raise InputError(f"unknown preprocessing {style!r} (this version knows {', '.join(PREPROCESSING)})")
    gray = _grayscale(image)
    if _border(gray).mean() > 127.5:
        gray = 255.0 - gray  # dark ink on light paper -> MNIST's light ink on black
    ink = np.clip(gray - np.median(_border(gray)), 0.0, None)
    if ink.max() <= 0:
        raise InputError("no digit found (blank image)")
    ink /= ink.max()
    rows, cols = np.nonzero(ink > _INK_THRESHOLD)
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    height, width = ink.shape
    scale = max(1, round(side * _BOX_SHARE)) / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    patch = Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(patch, dtype=np.float32) / 255.0
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = _centre_of_mass_offset(digit, side)
    canvas[top: top + digit.shape[0], left: left + digit.shape[1]] = digit
    return canvas.reshape(-1)


def resize_image(image: Image.Image, side: int) -> tuple[np.ndarray, bool]:
    """The ``resize`` style: the whole image as ``side x side`` uint8, white on black, and whether it
    was inverted (its border was light). Transparent pixels lie over white; colour becomes
    luminance; another size is resized (Lanczos)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        backdrop = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(backdrop, image)
    gray = image.convert("L")
    if gray.size != (side, side):
        gray = gray.resize((side, side), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.uint8)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127.5:
        return 255 - pixels, True
    return pixels, False


def open_image(source: str | Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode one image (a path or a binary file object) fully into memory, within ``max_pixels``
    (default :data:`MAX_IMAGE_PIXELS`).

    The size is checked from the header, before any pixel is decoded (``Image.open`` reads only the
    header), and Pillow's own decompression-bomb warning is an error here too: a digit photo never
    needs 40 megapixels, and a 13000 x 13000 PNG would take gigabytes to decode.

    Raises:
        ImageTooLarge: over the pixel limit (callers name the file: ``predict`` prints the path,
            ``serve`` answers 413).
        InputError: missing, a directory, not an image Pillow reads, or undecodable.
    """
    try:
        with _DECODE_LOCK, warnings.catch_warnings():  # the lock: warning filters are process-wide
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooLarge(f"image of {width} x {height} pixels, over the limit of "
                                        f"{max_pixels // 1_000_000} megapixels")
                image.load()
                return image.copy()
    except FileNotFoundError:
        raise InputError("no such file") from None
    except IsADirectoryError:
        raise InputError("is a directory, not an image") from None
    except UnidentifiedImageError:
        raise InputError("not an image (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # Pillow's check, in open()
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        raise ImageTooLarge(f"image of {pixels[1] if pixels else 'too many'} pixels, over the limit of "
                            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as err:
        raise InputError(f"cannot read image ({str(err)[:200]})") from None


def _grayscale(image: Image.Image) -> np.ndarray:
    """Luminance as float 0..255; transparent pixels become the background their ink contrasts with."""
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        light = np.asarray(rgba.convert("L"), dtype=np.float32)
        if alpha.min() < 1.0:
            ink_level = float((light * alpha).sum() / max(alpha.sum(), 1e-6))
            background = 255.0 if ink_level < 127.5 else 0.0
            return light * alpha + background * (1.0 - alpha)
        return light
    return np.asarray(image.convert("L"), dtype=np.float32)


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def _centre_of_mass_offset(digit: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left corner that puts ``digit``'s centre of mass on the canvas centre, kept inside the canvas."""
    height, width = digit.shape
    total = digit.sum()
    rows, cols = np.indices(digit.shape)
    cy = (rows * digit).sum() / total if total > 0 else (height - 1) / 2
    cx = (cols * digit).sum() / total if total > 0 else (width - 1) / 2
    top = int(np.clip(round(side / 2 - cy), 0, side - height))
    left = int(np.clip(round(side / 2 - cx), 0, side - width))
    return top, left

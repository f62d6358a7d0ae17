"""Your own data: a folder of images with one subfolder per class, or a CSV of pixels.

Both give the same thing as MNIST's IDX files: square uint8 images, white ink on black, integer
labels, and the class names (:class:`RawData`). :func:`mnist_sweep.data.dataset.load_arrays` picks the
reader from the source's shape on disk.

**Image folder** (the layout of ``keras.utils.image_dataset_from_directory``)::

    digits/                 digits/
      cat/ a.png ...   or     train/ cat/ ... dog/ ...
      dog/ b.jpg ...          test/  cat/ ... dog/ ...

Class names are the subfolder names, sorted. Files are decoded with Pillow (PNG, JPEG, BMP, GIF,
TIFF, WebP); hidden files (``.DS_Store``) and files without an image suffix are skipped and
counted; a file with an image suffix that Pillow cannot decode is an error naming it. Colour
images become grayscale, images of another size than the most common one (or ``image_size``)
are resized to it, and dark-on-light images (light border) are inverted to MNIST's
light-on-dark: each is said once in :attr:`RawData.notes`. That is the ``resize`` preprocessing
(:func:`mnist_sweep.data.images.resize_image`), recorded in the models trained on them, so
``predict`` and ``serve`` treat an image file exactly so (:attr:`RawData.preprocessing`).

**CSV**: a header with a ``label`` column and one column per pixel (a square count: 784 is
28 x 28), values 0..255, one image per row (the layout of the best-known MNIST competition);
a second CSV may hold the labelled test images. Labels that are not 0..k-1 are taken as class
names, sorted.

Example:
    >>> raw = read_image_folder(Path("letters"))
    >>> raw.class_names, raw.x_train.shape
    (('a', 'b', 'c'), (3000, 28, 28))
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from mnist_sweep.data.images import MNIST_STYLE, RESIZE_STYLE, ImageTooLarge, open_image, resize_image
from mnist_sweep.errors import InputError

MAX_ARRAY_BYTES = 10**9  # the most one array of an .npz may declare; keras's mnist.npz holds 47 MB at most
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


@dataclass(frozen=True)
class RawData:
    """Square uint8 images (n x side x side, white on black), int labels, class names; no test split
    when the source has none (``x_test`` is None: :func:`mnist_sweep.data.dataset.load_dataset` carves one)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    #: How an image file becomes one of these images (:data:`mnist_sweep.data.images.PREPROCESSING`):
    #: ``resize`` for an image folder, ``mnist`` for arrays of MNIST-style digits.
    preprocessing: str = MNIST_STYLE

    def __getitem__(self, key: str) -> np.ndarray | None:
        """``raw["x_train"]`` as well as ``raw.x_train``: the keys of keras's ``mnist.npz``."""
        if key not in ("x_train", "y_train", "x_test", "y_test"):
            raise KeyError(key)
        return getattr(self, key)


def read_image_folder(root: Path, image_size: int | None = None) -> RawData:
    """The images under ``root`` (see the module docstring), resized to ``image_size`` when given.

    Raises:
        InputError: no class folders, no images, a file that does not decode, or test classes
            that the training folders lack.
    """
    train_root = root / "train" if (root / "train").is_dir() else root
    test_root = root / "test" if train_root != root and (root / "test").is_dir() else None
    classes = tuple(sorted(p.name for p in train_root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise InputError(f"{train_root}: no class folders (want one subfolder of images per class)")
    skipped: list[Path] = []
    train = _read_classes(train_root, classes, skipped)
    test = _read_classes(test_root, classes, skipped, must_exist=False) if test_root else None
    images = [img for img, _ in train] + [img for img, _ in (test or [])]
    if not train:
        raise InputError(f"{train_root}: no image files in its class folders")
    side, notes = _target_side(images, image_size, root)
    if skipped:
        notes.append(f"skipped {len(skipped)} file(s) that are hidden or not images (e.g. {skipped[0].name})")
    convert = _Converter(side)
    x_train = np.stack([convert(img) for img, _ in train])
    x_test = np.stack([convert(img) for img, _ in test]) if test else None
    notes += convert.notes()
    return RawData(x_train, np.array([c for _, c in train], np.int32), x_test,
                   np.array([c for _, c in test], np.int32) if test else None, classes, notes, RESIZE_STYLE)


def read_pixel_csv(path: Path, test_path: Path | None = None) -> RawData:
    """Images from a ``label,pixel0,...`` CSV (and a labelled test CSV), as the module docstring says.

    Raises:
        InputError: no ``label`` column, a pixel count that is not a square, values that are not
            numbers in 0..255, or a test file with other columns or unknown labels.
    """
    train_labels, train_pixels = _read_csv(path)
    test_labels, test_pixels = _read_csv(test_path) if test_path is not None else (None, None)
    if test_pixels is not None and test_pixels.shape[1] != train_pixels.shape[1]:
        raise InputError(f"{test_path}: {test_pixels.shape[1]} pixel columns, {path} has {train_pixels.shape[1]}")
    names, index = _class_index(train_labels)
    if test_labels is not None and not set(test_labels) <= set(index):
        unknown = sorted(set(test_labels) - set(index))[:3]
        raise InputError(f"{test_path}: labels not in {path}: {', '.join(map(str, unknown))}")
    side = int(round(train_pixels.shape[1] ** 0.5))
    to_images = lambda pixels: pixels.reshape(len(pixels), side, side)  # noqa: E731
    return RawData(to_images(train_pixels), np.array([index[v] for v in train_labels], np.int32),
                   None if test_pixels is None else to_images(test_pixels),
                   None if test_labels is None else np.array([index[v] for v in test_labels], np.int32), names)


def read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` (keras's ``mnist.npz`` layout: ``x_train``, ``y_train``, ...).

    Each member's ``.npy`` header is read first and its declared shape and dtype checked before
    any memory is given to it: at most :data:`MAX_ARRAY_BYTES`, no more than the member holds, no
    Python objects (nothing is unpickled).

    Raises:
        InputError: one line naming the file (and the member), for a file that is not a zip of
            ``.npy`` arrays, a missing array, or a declared array over the limit or beyond its data.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): archive.getinfo(name) for name in archive.namelist()}
            missing = sorted(set(keys) - set(members))
            if missing:
                raise InputError(f"{path}: missing arrays {', '.join(missing)} (want {', '.join(keys)})")
            for key in keys:
                with archive.open(members[key]) as member:
                    _check_npy_header(path, key, member, members[key].file_size)
            arrays = {}
            for key in keys:
                with archive.open(members[key]) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            zipfile.LargeZipFile, zlib.error) as err:
        raise InputError(f"{path}: not a readable .npz file ({type(err).__name__}: {_first_line(err)})") from None


def _check_npy_header(path: Path, key: str, member: IO[bytes], member_size: int) -> None:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise InputError(f"{path}: {key}: .npy format version {version[0]}.{version[1]} is not supported (want 1.0 "
                         "or 2.0, what numpy.savez writes)")
    if dtype.hasobject:
        raise InputError(f"{path}: {key}: holds Python objects (dtype {dtype}); want an array of numbers")
    needed = math.prod(shape) * dtype.itemsize
    shown = f"shape {shape} of {dtype} ({needed} bytes)"
    if needed > MAX_ARRAY_BYTES:
        raise InputError(f"{path}: {key}: declares {shown}, over the limit of {MAX_ARRAY_BYTES} bytes")
    if needed > member_size - member.tell():
        raise InputError(f"{path}: {key}: declares {shown}, more than its {member_size - member.tell()} bytes "
                         "of data")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def class_names_of(labels: np.ndarray) -> tuple[str, ...]:
    """Names of integer classes 0..max: their numbers (MNIST's digits are ``'0'`` .. ``'9'``)."""
    return tuple(str(i) for i in range(int(labels.max()) + 1)) if len(labels) else ()


def _read_classes(folder: Path, classes: tuple[str, ...], skipped: list[Path],
                  must_exist: bool = True) -> list[tuple[object, int]]:
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    extra = sorted(set(found) - set(classes))
    if extra:
        raise InputError(f"{folder}: class folder(s) {', '.join(extra)} not in the training classes")
    items = []
    for number, name in enumerate(classes):
        if not (folder / name).is_dir():
            if must_exist:
                raise InputError(f"{folder / name}: missing class folder")
            continue
        for path in sorted((folder / name).iterdir()):
            if path.name.startswith(".") or path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(path)
                continue
            try:
                items.append((open_image(path), number))  # within images.MAX_IMAGE_PIXELS, checked first
            except ImageTooLarge as err:
                raise InputError(f"{path}: {err}") from None
            except InputError as err:
                raise InputError(f"{path}: not a readable image ({err})") from None
    return items


def _target_side(images: list, image_size: int | None, root: Path) -> tuple[int, list[str]]:
    sizes = Counter(img.size for img in images)
    (width, height), _ = sizes.most_common(1)[0]
    if image_size is None and width != height:
        raise InputError(f"{root}: most images are {width} x {height}, not square; set data.image_size")
    side = image_size or width
    others = sum(n for size, n in sizes.items() if size != (side, side))
    notes = [f"resized {others} of {len(images)} images to {side} x {side}"] if others else []
    return side, notes


class _Converter:
    """A PIL image as a ``side x side`` uint8 array, white on black (the ``resize`` preprocessing);
    counts what it had to change."""

    def __init__(self, side: int) -> None:
        self.side, self.colour, self.inverted = side, 0, 0

    def __call__(self, image: object) -> np.ndarray:
        if image.mode not in ("L", "1", "I", "I;16", "F", "P", "LA"):
            self.colour += 1
        pixels, inverted = resize_image(image, self.side)
        self.inverted += inverted
        return pixels

    def notes(self) -> list[str]:
        notes = [f"converted {self.colour} colour image(s) to grayscale"] if self.colour else []
        if self.inverted:
            notes.append(f"inverted {self.inverted} dark-on-light image(s) to light-on-dark, as MNIST is")
        return notes


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: not a readable CSV ({type(err).__name__}: {err})") from None
    if "label" not in frame.columns:
        raise InputError(f"{path}: no 'label' column (want label,pixel0,pixel1,...)")
    pixels = frame.drop(columns="label")
    count = pixels.shape[1]
    if count == 0 or int(round(count ** 0.5)) ** 2 != count:
        raise InputError(f"{path}: {count} pixel columns, want a square count (784 for 28 x 28)")
    try:
        values = pixels.to_numpy(dtype=np.float64)
    except ValueError:
        raise InputError(f"{path}: pixel values must be numbers") from None
    if len(values) == 0:
        raise InputError(f"{path}: no rows")
    if np.isnan(values).any() or values.min() < 0 or values.max() > 255:
        raise InputError(f"{path}: pixel values must be numbers in 0..255 (none missing)")
    if values.max() <= 1.0:
        values = values * 255.0  # already scaled to [0, 1]
    return frame["label"].to_numpy(), np.round(values).astype(np.uint8)


def _class_index(labels: np.ndarray) -> tuple[tuple[str, ...], dict[object, int]]:
    values = sorted(set(labels.tolist()), key=lambda v: (isinstance(v, str), v))
    if all(isinstance(v, int) for v in values) and values == list(range(len(values))):
        return tuple(str(v) for v in values), {v: v for v in values}
    return tuple(str(v) for v in values), {v: i for i, v in enumerate(values)}

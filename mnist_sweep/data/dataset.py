"""MNIST or your own images, offline first: the sources, checksums, fixed stratified splits.

The four canonical IDX files ship inside the package (``mnist_sweep/data/mnist``) and are
checked against their published sha256 on every load. Other data come from a directory of IDX
files (gzip or raw), an ``.npz`` in keras's ``mnist.npz`` layout, ``keras.datasets.mnist``
(needs internet), a folder of images with one subfolder per class or a ``label,pixel...`` CSV
(:mod:`mnist_sweep.data.sources`): square images of any size, any number of classes. A source
without a test split gets one carved, seeded and stratified (``data.test_fraction``), the same
images every time.

Load once per process and pass the :class:`Dataset` to every trial; the objective sees only
``train`` and ``val``. ``test`` is for ``train`` and ``final``, once each.

Example:
    >>> from mnist_sweep.sweep.config import DataConfig
    >>> ds = load_dataset(DataConfig(validation_size=10000))
    >>> ds.x_train.shape, ds.x_val.shape, ds.x_test.shape
    ((50000, 784), (10000, 784), (10000, 784))
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_sweep.data.images import MNIST_STYLE
from mnist_sweep.data.sources import RawData, class_names_of, read_image_folder, read_npz, read_pixel_csv
from mnist_sweep.errors import InputError
from mnist_sweep.sweep.config import DataConfig

BUNDLED_DIR = Path(__file__).resolve().parent / "mnist"

IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_IDX_TYPES = {0x08: np.uint8}
MAX_IDX_BYTES = 10**9  # the most an IDX file may declare; MNIST's largest holds 47 MB
_MAX_DEFLATE_RATIO = 1032  # deflate's largest ratio: a gzip file inflates to at most this many times its size


@dataclass(frozen=True)
class Dataset:
    """Flattened float32 images in [0, 1] (n x side*side, MNIST's n x 784), int32 labels, class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))
    notes: tuple[str, ...] = ()
    #: How an image file becomes one of these images (``resize`` for an image folder, else ``mnist``;
    #: :mod:`mnist_sweep.data.images`); the models trained on them record it.
    preprocessing: str = MNIST_STYLE

    @property
    def side(self) -> int:
        """Images are ``side x side`` pixels."""
        return int(round(self.x_train.shape[1] ** 0.5))

    @property
    def signature(self) -> dict[str, object]:
        """What a study's trials depend on besides the config: image size and class names."""
        return {"side": self.side, "class_names": list(self.class_names)}

    def describe(self) -> str:
        shape = "" if self.side == 28 and len(self.class_names) == 10 else \
            f" ({self.side} x {self.side}, {len(self.class_names)} classes)"
        return (f"{self.source}: {len(self.x_train)} train, {len(self.x_val)} validation, "
                f"{len(self.x_test)} test images{shape}")

    def merge_validation(self) -> Dataset:
        """The validation images moved into the training set (none left to validate on), test untouched.

        For the final model, once the config is chosen: with ``train_size`` unset that is the
        whole 60,000-image training set; with it, the same ``train_size + validation_size`` images
        the sweep saw.

        Example:
            >>> load_dataset(DataConfig()).merge_validation().x_train.shape
            (60000, 784)
        """
        return Dataset(
            x_train=np.concatenate([self.x_train, self.x_val]), y_train=np.concatenate([self.y_train, self.y_val]),
            x_val=self.x_val[:0], y_val=self.y_val[:0], x_test=self.x_test, y_test=self.y_test, source=self.source,
            class_names=self.class_names, notes=self.notes, preprocessing=self.preprocessing,
        )


def read_idx(path: str | Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a uint8 array of its declared shape.

    The file is read through a bounded reader: the header's shape is checked first (at most
    :data:`MAX_IDX_BYTES`, and no more than the file could hold: its size, or for gzip its size
    times deflate's largest ratio), then exactly the declared bytes plus one are read, so a gzip
    bomb stops after what the header declared instead of inflating to its end.

    Raises:
        InputError: naming the file, for a wrong magic number, a declared shape over the limit or
            beyond the file, a truncated (or overlong) payload, bad gzip data or a checksum mismatch.
    """
    path, gz = Path(path), False
    try:
        with open(path, "rb") as stored:
            size_on_disk = os.fstat(stored.fileno()).st_size
            gz = stored.read(2) == b"\x1f\x8b"
            stored.seek(0)
            reader = gzip.GzipFile(fileobj=stored) if gz else stored
            header, dims = _idx_header(path, reader)
            size = math.prod(dims)
            if math.prod(max(d, 1) for d in dims) > MAX_IDX_BYTES:  # an empty array of huge sides is refused too
                raise InputError(f"{path}: IDX header declares shape {dims} ({size} bytes), over the limit of "
                                 f"{MAX_IDX_BYTES} bytes")
            if not gz and size_on_disk - len(header) != size:
                raise InputError(f"{path}: IDX payload is {size_on_disk - len(header)} bytes, header says {size} "
                                 f"({dims})")
            if gz and len(header) + size > size_on_disk * _MAX_DEFLATE_RATIO + 1024:
                raise InputError(f"{path}: IDX header declares shape {dims} ({size} bytes), more than a "
                                 f"{size_on_disk}-byte gzip file can hold")
            payload = reader.read(size + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"{path}: cannot read {'gzip data' if gz else 'the file'} ({err})") from None
    if len(payload) < size:
        raise InputError(f"{path}: IDX payload is {len(payload)} bytes, header says {size} ({dims})")
    if len(payload) > size:
        raise InputError(f"{path}: IDX payload is longer than the {size} bytes its header says ({dims})")
    if expected_sha256 is not None:
        hasher = hashlib.sha256(header)
        hasher.update(payload)
        digest = hasher.hexdigest()
        if digest != expected_sha256:
            raise InputError(f"{path}: sha256 mismatch (got {digest[:16]}..., want {expected_sha256[:16]}...)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _idx_header(path: Path, reader: BinaryIO) -> tuple[bytes, list[int]]:
    """The header's bytes and the shape it declares."""
    magic = reader.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_TYPES:
        raise InputError(f"{path}: not an IDX file of unsigned bytes (magic {magic.hex() or 'missing'})")
    ndim = magic[3]
    dims = reader.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise InputError(f"{path}: truncated IDX header")
    return magic + dims, [int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim)]


def _find_idx(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.gz", folder / name, folder / name.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder}: missing {name}[.gz]")


def _load_idx_dir(folder: Path, verify: bool) -> dict[str, np.ndarray]:
    return {
        key: read_idx(_find_idx(folder, name), MNIST_SHA256[name] if verify else None)
        for key, name in IDX_NAMES.items()
    }


def _load_keras() -> dict[str, np.ndarray]:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as err:  # noqa: BLE001 - any download failure is the user's network
        raise InputError(f"data.source keras: download failed ({type(err).__name__}); use 'bundled'") from None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_arrays(source: str = "bundled", image_size: int | None = None,
                test_source: str | None = None) -> RawData:
    """The raw uint8 images of a data source with their labels and class names, checked.

    A directory holding class subfolders is an image folder; one holding IDX files is IDX; a
    ``.csv`` is a pixel CSV (``test_source``: its labelled test CSV); a ``.npz`` is keras's layout.
    """
    if source == "bundled":
        raw = _from_arrays(_load_idx_dir(BUNDLED_DIR, verify=True))
    elif source == "keras":
        raw = _from_arrays(_load_keras())
    else:
        path = Path(source).expanduser()
        if path.is_dir() and _has_idx(path):
            raw = _from_arrays(_load_idx_dir(path, verify=False))
        elif path.is_dir():
            raw = read_image_folder(path, image_size)
        elif path.suffix.lower() == ".npz" and path.is_file():
            raw = _from_arrays(read_npz(path, tuple(IDX_NAMES)))
        elif path.suffix.lower() == ".csv" and path.is_file():
            raw = read_pixel_csv(path, Path(test_source).expanduser() if test_source else None)
        elif not path.exists():
            raise InputError(f"{source}: no such data file or directory")
        else:
            raise InputError(f"{source}: want a directory of IDX files or of class folders, an .npz or a .csv file")
    _check_arrays(raw, source)
    return raw


def _has_idx(folder: Path) -> bool:
    return any(folder.glob("*idx*-ubyte*"))


def _from_arrays(arrays: dict[str, np.ndarray]) -> RawData:
    labels = np.concatenate([arrays["y_train"].reshape(-1), arrays["y_test"].reshape(-1)])
    if labels.size and labels.min() < 0:
        raise InputError("labels must be whole numbers >= 0")
    names = class_names_of(labels.astype(np.int64)) if labels.size else ()
    return RawData(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], names)


def _check_arrays(raw: RawData, source: str) -> None:
    splits = [("train", raw.x_train, raw.y_train)] + ([("test", raw.x_test, raw.y_test)] if raw.x_test is not None
                                                      else [])
    side = raw.x_train.shape[1] if raw.x_train.ndim == 3 else None
    for split, x, y in splits:
        if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[1] != side or not 4 <= x.shape[1] <= 256:
            raise InputError(f"{source}: x_{split} has shape {x.shape}, want (n, side, side) square images, "
                             "the same side (4..256) in every split")
        if y.ndim != 1 or len(y) != len(x):
            raise InputError(f"{source}: {len(x)} {split} images but y_{split} has shape {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= len(raw.class_names)):
            raise InputError(f"{source}: y_{split} has labels outside 0-{len(raw.class_names) - 1}")
    if len(raw.class_names) < 2:
        raise InputError(f"{source}: want at least 2 classes, found {len(raw.class_names)}")


def stratified_split(labels: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with ``n_val`` validation items in the labels' class proportions."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.floor(counts * n_val / len(labels)).astype(int)
    for i in np.argsort(-(counts * n_val / len(labels) - quotas))[: n_val - quotas.sum()]:
        quotas[i] += 1  # largest remainders first, so the quotas add up to n_val
    val = np.concatenate([
        rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas, strict=True)
    ])
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    return rng.permutation(np.flatnonzero(mask)), rng.permutation(val)


def _scale(x: np.ndarray) -> np.ndarray:
    return (x.reshape(len(x), -1).astype(np.float32) / 255.0)


def load_dataset(config: DataConfig, source: str | None = None) -> Dataset:
    """Load, check, scale and split the data as ``config`` says (``source`` overrides ``config.source``)."""
    source = source or config.source
    raw = load_arrays(source, config.image_size, config.test_source)
    x_all, y_all, notes = raw.x_train, raw.y_train.astype(np.int32), list(raw.notes)
    x_test, y_test = raw.x_test, raw.y_test
    if x_test is None:  # carved once, seeded: the same test images for the sweep, train and final
        n_test = max(len(raw.class_names), round(config.test_fraction * len(y_all)))
        keep, test = stratified_split(y_all, n_test, config.seed + 1)
        keep.sort()
        test.sort()
        x_test, y_test, x_all, y_all = x_all[test], y_all[test], x_all[keep], y_all[keep]
        notes.append(f"no test split: {n_test} images ({config.test_fraction:.0%}) carved as the test set, seeded")
    if config.validation_size >= len(y_all):
        raise InputError(f"data.validation_size: {config.validation_size} >= {len(y_all)} training images")
    train_idx, val_idx = stratified_split(y_all, config.validation_size, config.seed)
    if config.train_size is not None:
        train_idx = train_idx[: config.train_size]
    return Dataset(
        x_train=_scale(x_all[train_idx]), y_train=y_all[train_idx],
        x_val=_scale(x_all[val_idx]), y_val=y_all[val_idx],
        x_test=_scale(x_test), y_test=y_test.astype(np.int32),
        source=source, class_names=raw.class_names, notes=tuple(notes), preprocessing=raw.preprocessing,
    )

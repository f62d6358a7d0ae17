"""MNIST loading: the IDX reader, checksums, other sources, and the stratified validation split."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from mnist_sweep.data.dataset import (
    BUNDLED_DIR,
    IDX_NAMES,
    load_arrays,
    load_dataset,
    read_idx,
    stratified_split,
)
from mnist_sweep.errors import InputError
from mnist_sweep.sweep.config import DataConfig


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_dataset(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)), "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28)), "y_test": np.arange(n_test) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_NAMES.items():
        data = _idx(arrays[key])
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_round_trips_gzip_and_raw(tmp_path: Path, gz: bool) -> None:
    arrays = _write_dataset(tmp_path, gz=gz)
    loaded = load_arrays(str(tmp_path))
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)


def test_checksum_mismatch_is_loud(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(_idx(np.arange(5)))
    with pytest.raises(InputError, match=r"labels: sha256 mismatch \(got [0-9a-f]{16}\.\.\., want 65a50cbbf4e906d7"):
        read_idx(path, expected_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc", "not an IDX file of unsigned bytes"),
        (b"PK\x03\x04whatever", "not an IDX file"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (_idx(np.zeros((4, 28, 28)))[:-5], "IDX payload is 3131 bytes, header says 3136"),
        (b"", "not an IDX file"),
    ],
)
def test_malformed_idx_files_are_named(tmp_path: Path, payload: bytes, expected: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(payload)
    with pytest.raises(InputError, match=f"bad-idx: {expected}"):
        read_idx(path)


def test_truncated_gzip_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(_idx(np.random.default_rng(0).integers(0, 256, (50, 28, 28))))[:5000])
    with pytest.raises(InputError, match="t.gz: cannot read gzip data"):
        read_idx(path)


def test_mismatched_image_and_label_counts(tmp_path: Path) -> None:
    _write_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(29) % 10)))
    with pytest.raises(InputError, match="30 train images but y_train has shape \\(29,\\)"):
        load_arrays(str(tmp_path))


def test_npz_source(tmp_path: Path) -> None:
    arrays = _write_dataset(tmp_path / "idx")
    np.savez(tmp_path / "mnist.npz", **arrays)
    loaded = load_arrays(str(tmp_path / "mnist.npz"))
    np.testing.assert_array_equal(loaded["x_test"], arrays["x_test"])
    np.savez(tmp_path / "partial.npz", x_train=arrays["x_train"])
    with pytest.raises(InputError, match="partial.npz: missing arrays x_test, y_test, y_train"):
        load_arrays(str(tmp_path / "partial.npz"))


def test_bundled_mnist_is_the_canonical_one() -> None:
    # Verified against the published sha256 on load; label counts as documented.
    arrays = load_arrays("bundled")
    assert arrays["x_train"].shape == (60000, 28, 28)
    assert arrays["x_test"].shape == (10000, 28, 28)
    assert np.bincount(arrays["y_test"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert sorted(p.name for p in BUNDLED_DIR.glob("*.gz")) == sorted(f"{n}.gz" for n in IDX_NAMES.values())


def test_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(10), [100, 200, 100, 100, 100, 100, 100, 100, 100, 100])
    train, val = stratified_split(labels, 110, seed=3)
    assert len(val) == 110 and len(train) == len(labels) - 110
    assert not set(train) & set(val)
    assert np.bincount(labels[val]).tolist() == [10, 20, 10, 10, 10, 10, 10, 10, 10, 10]
    again_train, again_val = stratified_split(labels, 110, seed=3)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, stratified_split(labels, 110, seed=4)[1])


def test_dataset_scaled_flattened_and_test_kept_apart(tiny_dataset) -> None:
    ds = tiny_dataset
    assert ds.x_train.shape == (2000, 784) and ds.x_val.shape == (1000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # validation images come from the training set, never from the test set
    test_rows = {row.tobytes() for row in ds.x_test[:2000]}
    assert not any(row.tobytes() in test_rows for row in ds.x_val)


def test_validation_size_must_leave_training_images(tmp_path: Path) -> None:
    _write_dataset(tmp_path)
    with pytest.raises(InputError, match="data.validation_size: 30 >= 30 training images"):
        load_dataset(DataConfig(validation_size=30), source=str(tmp_path))

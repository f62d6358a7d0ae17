"""The images a sweep trains on: bundled MNIST (checked by sha256), your own sources (image folders,
CSV, ``.npz``, IDX), fixed stratified splits, and decoding one image into a model input.
"""

from __future__ import annotations

from mnist_sweep.data.dataset import Dataset, load_arrays, load_dataset, stratified_split
from mnist_sweep.data.images import MAX_IMAGE_PIXELS, PREPROCESSING, ImageTooLarge, open_image, preprocess
from mnist_sweep.data.sources import IMAGE_SUFFIXES, RawData

__all__ = [
    "Dataset",
    "load_arrays",
    "load_dataset",
    "stratified_split",
    "RawData",
    "IMAGE_SUFFIXES",
    "ImageTooLarge",
    "open_image",
    "preprocess",
    "PREPROCESSING",
    "MAX_IMAGE_PIXELS",
]

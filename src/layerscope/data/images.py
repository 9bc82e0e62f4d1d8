"""Labelled images for vision models (SPEC section 7.8), offline.

Sources:

- ``digits``: the 1,797 handwritten digits (8 x 8 grey, 10 classes) of the UCI ML hand-written
  digits data set (Alpaydin & Kaynak, 1998), shipped inside scikit-learn (no download).
- ``fashion-mnist``: Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; MIT), from the Debian package
  ``dataset-fashion-mnist`` or any folder holding its ``t10k-images-idx3-ubyte(.gz)`` and
  ``t10k-labels-idx1-ubyte(.gz)`` files (``fashion-mnist:/path/to/folder``); the 10,000 test images.
- a folder of image files with one subfolder per class (``folder/<class>/<image>``);
- a ``.npz`` file with arrays ``images`` (N, H, W[, C]) and ``labels`` (N,).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerscope.errors import LayerscopeError, suggest

__all__ = ["IMAGE_SOURCES", "LabelledImages", "load_images"]

#: Named image sources (besides folders and .npz files).
IMAGE_SOURCES = ("digits", "fashion-mnist")
_FASHION_FOLDERS = ("/usr/share/dataset-fashion-mnist", "/usr/share/fashion-mnist", "/usr/share/datasets/fashion-mnist")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class LabelledImages:
    """Images with integer labels.

    Attributes
    ----------
    images : numpy.ndarray or list
        (N, H, W) / (N, H, W, C) uint8 array, or a list of file paths (folders of images).
    labels : numpy.ndarray of int, shape (N,)
    classes : list of str
        Name of each label.
    source : str
        Where the images come from (recorded with results).
    """

    images: np.ndarray | list[str]
    labels: np.ndarray
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def _digits() -> LabelledImages:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    return LabelledImages(images, data.target.astype(np.int64), [str(i) for i in range(10)],
                          "UCI hand-written digits (scikit-learn load_digits)")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise LayerscopeError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise LayerscopeError(f"{path} is truncated: {array.size} values for shape {shape}")
    return array.reshape(shape)


def _fashion_mnist(folder: str | None) -> LabelledImages:
    candidates = [folder] if folder else list(_FASHION_FOLDERS)
    for candidate in candidates:
        root = Path(candidate)
        for suffix in ("", ".gz"):
            images, labels = root / f"t10k-images-idx3-ubyte{suffix}", root / f"t10k-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                           "Ankle boot"]
                return LabelledImages(_read_idx(images), _read_idx(labels).astype(np.int64), classes,
                                      f"Fashion-MNIST test set ({root})")
    raise LayerscopeError("Fashion-MNIST files not found (install the Debian package dataset-fashion-mnist, or "
                          "give 'fashion-mnist:/folder' holding t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz])")


def _folder(root: Path) -> LabelledImages:
    classes = sorted(child.name for child in root.iterdir() if child.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                paths.append(str(path))
                labels.append(label)
    if not paths:
        raise LayerscopeError(f"no images in {root}: expected {root}/<class>/<image file>")
    return LabelledImages(paths, np.array(labels, dtype=np.int64), classes, f"image folder {root}")


def _npz(path: Path) -> LabelledImages:
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle a user's file
            images, labels = data["images"], data["labels"]
    except KeyError as error:
        raise LayerscopeError(f"{path} must hold arrays 'images' and 'labels' (missing {error})") from None
    except (ValueError, OSError) as error:
        raise LayerscopeError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if len(images) != len(labels):
        raise LayerscopeError(f"{path}: {len(images)} images but {len(labels)} labels")
    names, codes = np.unique(labels, return_inverse=True)
    return LabelledImages(images, codes.astype(np.int64), [str(name) for name in names], f"file {path}")


def load_images(source: str | Path = "digits", limit: int | None = None, seed: int = 0) -> LabelledImages:
    """Labelled images from a named source, a class-per-subfolder folder, or a ``.npz`` file.

    Parameters
    ----------
    source : str or Path
        ``digits`` (default), ``fashion-mnist[:folder]``, a folder, or a ``.npz`` file.
    limit : int, optional
        Keep a seeded random subset of this many images (in source order).
    seed : int
        Seed of the subset.
    """
    from layerscope.data import subset

    name = str(source)
    path = Path(name).expanduser()
    if name == "digits":
        data = _digits()
    elif name == "fashion-mnist" or name.startswith("fashion-mnist:"):
        data = _fashion_mnist(name.partition(":")[2] or None)
    elif path.is_dir():
        data = _folder(path)
    elif path.suffix == ".npz":
        if not path.is_file():
            raise LayerscopeError(f"file not found: {path}")
        data = _npz(path)
    else:
        raise LayerscopeError(f"unknown image source '{name}'{suggest(name, IMAGE_SOURCES)}; use "
                              f"{', '.join(IMAGE_SOURCES)}, a folder of <class>/<image> files or a .npz file")
    if len(data) == 0:
        raise LayerscopeError(f"no images in '{name}'")
    keep = subset(len(data), limit, seed)
    if len(keep) < len(data):
        images = [data.images[i] for i in keep] if isinstance(data.images, list) else data.images[keep]
        data = LabelledImages(images, data.labels[keep], data.classes, data.source)
    return data

"""Loaders for the image datasets used by examples and benchmarks.

Each loader reads local ``.npz`` files (``images`` uint8 (N, H, W[, C]) and
labels) from ``data_home`` or the ``SKSIM_DATA`` environment variable, laid
out as ``<data_home>/<name>/<name>-<split>.npz``. A named folder without the
files is an error (FileNotFoundError naming the files); with no folder named,
Fashion-MNIST and MNIST are downloaded by ``sklearn.datasets.fetch_openml``
(said on stderr). The package never assumes a path outside itself.
"""

import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

_OPENML = {"fashion-mnist": "Fashion-MNIST", "mnist": "mnist_784"}
_N_TRAIN = 60000


def _data_home(data_home):
    if data_home is not None:
        return Path(data_home)
    env = os.environ.get("SKSIM_DATA")
    return Path(env) if env else None


def _load_local(folder, name, split):
    path = folder / name / f"{name}-{split}.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as archive:
        images = archive["images"]
        labels = archive["labels"]
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)


def _load(name, data_home, splits):
    folder = _data_home(data_home)
    result = {}
    if folder is not None:
        for split in splits:
            loaded = _load_local(folder, name, split)
            if loaded is not None:
                result[split] = loaded
    missing = [split for split in splits if split not in result]
    if missing and folder is not None:
        # a folder was named (argument or SKSIM_DATA): never download behind
        # the user's back when the files are not where they said
        source = "data_home" if data_home is not None else "SKSIM_DATA"
        expected = ", ".join(str(folder / name / f"{name}-{split}.npz") for split in missing)
        raise FileNotFoundError(
            f"{name}: {source} is {folder}, but it has no {expected} (arrays 'images' "
            f"uint8 and 'labels'). Put the files there, or pass data_home=None with "
            "SKSIM_DATA unset to download the dataset from OpenML.")
    if missing:
        import sys

        from sklearn.datasets import fetch_openml

        print(f"sksim: downloading {_OPENML[name]} from OpenML (about 30-50 MB, cached by "
              "scikit-learn in ~/scikit_learn_data); pass data_home to read local .npz "
              "files instead.", file=sys.stderr, flush=True)
        X, y = fetch_openml(_OPENML[name], version=1, return_X_y=True,
                            as_frame=False, parser="auto")
        X = np.asarray(X, dtype=np.uint8)
        y = np.asarray(y).astype(np.int64)
        official = {"train": (X[:_N_TRAIN], y[:_N_TRAIN]),
                    "test": (X[_N_TRAIN:], y[_N_TRAIN:])}
        for split in missing:
            result[split] = official[split]
    bunch = Bunch()
    for split in splits:
        images, labels = result[split]
        bunch[f"X_{split}"] = images.astype(np.float32) / 255.0
        bunch[f"y_{split}"] = labels
    return bunch


def load_fashion_mnist(data_home=None, *, splits=("train", "test")):
    """Fashion-MNIST as flat float32 pixels in [0, 1].

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder holding ``fashion-mnist/fashion-mnist-{train,test}.npz``;
        ``None`` uses the ``SKSIM_DATA`` environment variable, and without it
        downloads from OpenML. A folder without the files raises
        FileNotFoundError.
    splits : tuple of {"train", "test"}, default=("train", "test")

    Returns
    -------
    Bunch
        ``X_<split>`` of shape (n, 784) float32 and ``y_<split>`` of shape (n,).
    """
    return _load("fashion-mnist", data_home, tuple(splits))


def load_cifar100(data_home=None, *, splits=("train", "test")):
    """CIFAR-100 (fine labels) as flat float32 pixels in [0, 1], channels first.

    Reads ``cifar-100/cifar-100-{train,test}.npz`` (``images`` uint8 of shape
    (N, 32, 32, 3) in HWC/RGB layout, ``fine_labels``) from ``data_home`` or
    ``SKSIM_DATA``. There is no download fallback.

    Parameters
    ----------
    data_home : str or path-like, default=None
    splits : tuple of {"train", "test"}, default=("train", "test")

    Returns
    -------
    Bunch
        ``X_<split>`` of shape (n, 3072) float32, each row an image in
        (channel, row, column) order (what ``TorchBaseline(...,
        input_shape=(3, 32, 32))`` expects), and ``y_<split>`` (n,) int64.
    """
    folder = _data_home(data_home)
    bunch = Bunch()
    for split in tuple(splits):
        path = None if folder is None else folder / "cifar-100" / f"cifar-100-{split}.npz"
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"CIFAR-100 {split} split not found: expected "
                f"<data_home>/cifar-100/cifar-100-{split}.npz (data_home="
                f"{folder}); pass data_home or set SKSIM_DATA."
            )
        with np.load(path, allow_pickle=False) as archive:
            images = archive["images"]
            labels = archive["fine_labels"]
        chw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        bunch[f"X_{split}"] = chw.reshape(chw.shape[0], -1).astype(np.float32) / 255.0
        bunch[f"y_{split}"] = labels.astype(np.int64)
    return bunch


def load_mnist(data_home=None, *, splits=("test",)):
    """MNIST as flat float32 pixels in [0, 1] (same conventions as
    :func:`load_fashion_mnist`)."""
    return _load("mnist", data_home, tuple(splits))

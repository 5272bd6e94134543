"""Dataset loaders read local .npz files (the layout of ../shared/data)."""

import os
from pathlib import Path

import numpy as np
import pytest

from sksim.datasets import load_cifar100, load_fashion_mnist, load_mnist

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(folder, name, split, n):
    rng = np.random.default_rng(0)
    (folder / name).mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / name / f"{name}-{split}.npz",
                        images=rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
                        labels=rng.integers(0, 10, size=n, dtype=np.uint8))


def test_local_npz_layout(tmp_path, monkeypatch):
    _write(tmp_path, "fashion-mnist", "train", 12)
    _write(tmp_path, "fashion-mnist", "test", 5)
    data = load_fashion_mnist(tmp_path)
    assert data.X_train.shape == (12, 784) and data.X_test.shape == (5, 784)
    assert data.X_train.dtype == np.float32
    assert 0.0 <= data.X_train.min() and data.X_train.max() <= 1.0
    assert data.y_train.dtype == np.int64
    monkeypatch.setenv("SKSIM_DATA", str(tmp_path))
    from_env = load_fashion_mnist()
    np.testing.assert_array_equal(from_env.X_test, data.X_test)


def _require_shared_data():
    """Skip without the shared data folder, except in CI, which has it: there
    a missing folder is a failure, not a silent skip."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the shared data folder {SHARED_DATA} is missing")
        pytest.skip("shared data not available")


def test_shared_data():
    _require_shared_data()
    fashion = load_fashion_mnist(SHARED_DATA)
    assert fashion.X_train.shape == (60000, 784) and fashion.X_test.shape == (10000, 784)
    assert set(np.unique(fashion.y_test)) == set(range(10))
    mnist = load_mnist(SHARED_DATA)
    assert mnist.X_test.shape == (10000, 784)


def test_cifar100_local_layout_is_channels_first(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    (tmp_path / "cifar-100").mkdir()
    for split in ("train", "test"):
        np.savez_compressed(tmp_path / "cifar-100" / f"cifar-100-{split}.npz",
                            images=images, fine_labels=np.arange(4, dtype=np.uint8),
                            coarse_labels=np.zeros(4, dtype=np.uint8))
    data = load_cifar100(tmp_path)
    assert data.X_train.shape == (4, 3072) and data.X_train.dtype == np.float32
    # row = image in (channel, row, column) order, pixels / 255
    np.testing.assert_array_equal(data.X_test[1].reshape(3, 32, 32),
                                  images[1].transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_array_equal(data.y_train, np.arange(4))
    with pytest.raises(FileNotFoundError, match="cifar-100-train.npz"):
        load_cifar100(tmp_path / "nowhere")


def test_shared_cifar100():
    _require_shared_data()
    data = load_cifar100(SHARED_DATA, splits=("test",))
    assert data.X_test.shape == (10000, 3072)
    assert np.bincount(data.y_test).tolist() == [100] * 100


def test_named_folder_without_the_files_is_a_clear_error(tmp_path, monkeypatch):
    """A data folder that was named (argument or SKSIM_DATA) but lacks the files
    raises, naming the folder and the files; nothing is downloaded."""
    import sklearn.datasets

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although a data folder was named")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", no_download)
    monkeypatch.delenv("SKSIM_DATA", raising=False)
    _write(tmp_path, "fashion-mnist", "train", 4)  # the test split is missing
    with pytest.raises(FileNotFoundError, match=r"fashion-mnist-test\.npz") as info:
        load_fashion_mnist(tmp_path)
    assert str(tmp_path) in str(info.value) and "data_home" in str(info.value)
    monkeypatch.setenv("SKSIM_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="SKSIM_DATA"):
        load_mnist()


def test_openml_fallback_says_it_downloads(monkeypatch, capsys):
    import sklearn.datasets

    monkeypatch.delenv("SKSIM_DATA", raising=False)
    rng = np.random.default_rng(0)
    fake = (rng.integers(0, 256, size=(70000, 784)), rng.integers(0, 10, size=70000))
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", lambda *a, **k: fake)
    data = load_mnist(None)
    assert data.X_test.shape == (10000, 784)
    assert "downloading mnist_784 from OpenML" in capsys.readouterr().err

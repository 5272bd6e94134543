"""Dataset loaders read local .npz files (the layout of ../shared/data)."""

from pathlib import Path

import numpy as np
import pytest

from sksim.datasets import load_fashion_mnist, load_mnist

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


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data not available")
def test_shared_data():
    fashion = load_fashion_mnist(SHARED_DATA)
    assert fashion.X_train.shape == (60000, 784) and fashion.X_test.shape == (10000, 784)
    assert set(np.unique(fashion.y_test)) == set(range(10))
    mnist = load_mnist(SHARED_DATA)
    assert mnist.X_test.shape == (10000, 784)

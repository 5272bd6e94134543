"""sksim.inspection: the certified quantities of an implicit model given by its
matrices agree with the fitted estimators' and bound a teacher network."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier

from sksim import SIMClassifier
from sksim.baselines import mlp_forward, mlp_implicit_blocks, well_posed_layer_scales
from sksim.inspection import infinity_norm, path_bound


@pytest.fixture(scope="module")
def mlp_problem():
    """A small fitted ReLU MLP with two hidden layers (so A is not zero)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 6))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 1)
    mlp = MLPClassifier((10, 7), max_iter=3000, random_state=0).fit(X, y)
    return X, y, mlp


def test_infinity_norm_dense_sparse_and_empty():
    M = np.array([[1.0, -2.0, 0.0], [0.5, 0.5, -3.0]])
    assert infinity_norm(M) == 4.0
    assert infinity_norm(sp.csr_array(M)) == 4.0
    assert infinity_norm(np.zeros((0, 3))) == 0.0
    assert infinity_norm(sp.csr_array((2, 0))) == 0.0


def test_path_bound_is_the_estimators_lipschitz_path_bound(mlp_problem):
    X, y, _ = mlp_problem
    model = SIMClassifier(MLPClassifier((10, 7), max_iter=3000, random_state=0),
                          alpha=1e-3).fit(X, y)
    matrices = (model.A_, model.B_, model.C_, model.D_)
    assert path_bound(*matrices) == model.lipschitz_path_bound_
    dense = [m.toarray() for m in matrices]
    assert path_bound(*dense) == pytest.approx(model.lipschitz_path_bound_, rel=1e-12)
    assert path_bound(*matrices) <= model.lipschitz_bound_ * (1 + 1e-12)
    a, b, c, d = (infinity_norm(m) for m in matrices)
    assert c * b / (1 - a) + d == pytest.approx(model.lipschitz_bound_, rel=1e-12)


def test_path_bound_of_an_mlp_is_its_absolute_product_bound(mlp_problem):
    """The teacher as an implicit model (A strictly block lower triangular,
    so the bound holds whatever its norm): || |W_3| |W_2| |W_1| ||_inf, the
    same under the well-posed rescaling, which does not change the network."""
    _, _, mlp = mlp_problem
    product = np.abs(mlp.coefs_[2].T) @ np.abs(mlp.coefs_[1].T) @ np.abs(mlp.coefs_[0].T)
    expected = product.sum(axis=1).max()
    raw = mlp_implicit_blocks(mlp.coefs_, mlp.intercepts_)[:4]
    scales = well_posed_layer_scales(mlp.coefs_, 0.5)
    rescaled = mlp_implicit_blocks(mlp.coefs_, mlp.intercepts_, scales)[:4]
    assert path_bound(*raw) == pytest.approx(expected, rel=1e-12)
    assert path_bound(*rescaled) == pytest.approx(expected, rel=1e-12)


def test_path_bound_bounds_the_forward_pass_of_an_mlp(mlp_problem):
    """Direct forward passes of the MLP: no output moves by more than the
    bound times the l_inf size of the input step."""
    X, _, mlp = mlp_problem
    bound = path_bound(*mlp_implicit_blocks(mlp.coefs_, mlp.intercepts_)[:4])
    rng = np.random.default_rng(1)
    step = rng.uniform(-1e-2, 1e-2, size=X.shape)
    _, outputs = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    _, moved = mlp_forward(mlp.coefs_, mlp.intercepts_, X + step)
    change = np.abs(moved - outputs).max(axis=1)
    assert change.max() > 0
    assert np.all(change <= bound * np.abs(step).max(axis=1) * (1 + 1e-9))

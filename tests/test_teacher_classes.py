"""The class of each of a teacher's output columns: ``TorchBaseline(classes=...)``
maps them onto ``classes_``; without it, a teacher whose columns are clearly
not ``classes_`` in sorted order is refused instead of fitted silently."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.neural_network import MLPClassifier

from sksim import SIMClassifier

torch = pytest.importorskip("torch")
from sksim.baselines.torch import TorchBaseline  # noqa: E402

NAMES = np.array("zero one two three four five six seven eight nine".split())
N_TRAIN = 1000


def _train(net, X, targets, loss, steps, lr=1e-2):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimiser = torch.optim.Adam(net.parameters(), lr=lr)
        inputs = torch.tensor(X, dtype=torch.float32)
        for _ in range(steps):
            optimiser.zero_grad()
            loss(net(inputs), targets).backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


@pytest.fixture(scope="module")
def teacher(digits):
    """A ReLU MLP whose output column j is digit j, and its held-out accuracy."""
    X, y, X_test, y_test = digits
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    _train(net, X, torch.tensor(y), torch.nn.functional.cross_entropy, steps=300)
    with torch.no_grad():
        scores = net(torch.tensor(X_test, dtype=torch.float32)).numpy()
    accuracy = np.mean(scores.argmax(axis=1) == y_test)
    assert accuracy > 0.85
    return net, accuracy


def test_labels_in_column_order_fit_without_classes(digits, teacher):
    X, y, X_test, y_test = digits
    net, accuracy = teacher
    model = SIMClassifier(TorchBaseline(net)).fit(X, y)
    np.testing.assert_array_equal(model.classes_, np.arange(10))
    assert model.score(X_test, y_test) >= accuracy - 0.03


def test_string_labels_out_of_sorted_order_are_refused(digits, teacher):
    X, y, _, _ = digits
    assert list(np.unique(NAMES)) != list(NAMES)  # sorted order is not column order
    with pytest.raises(ValueError, match=r"do not match classes_ in sorted order") as info:
        SIMClassifier(TorchBaseline(teacher[0])).fit(X, NAMES[y])
    message = str(info.value)
    assert "classes=[...]" in message and "best matching" in message
    # the diagnostic reads the columns as the labels they are
    assert repr(NAMES.tolist()) in message


def test_classes_in_column_order_map_the_columns(digits, teacher):
    X, y, X_test, y_test = digits
    net, accuracy = teacher
    model = SIMClassifier(TorchBaseline(net, classes=NAMES)).fit(X, NAMES[y])
    np.testing.assert_array_equal(model.classes_, np.sort(NAMES))
    predicted = model.predict(X_test)
    assert predicted.dtype.kind == "U" and set(predicted) <= set(NAMES)
    assert np.mean(predicted == NAMES[y_test]) >= accuracy - 0.03
    # decision_function, predict_proba and predict agree on the column order
    proba = model.predict_proba(X_test)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], predicted)
    np.testing.assert_array_equal(
        model.classes_[model.decision_function(X_test).argmax(axis=1)], predicted)
    # the same model as with integer labels, its output rows permuted
    plain = SIMClassifier(TorchBaseline(net)).fit(X, y)
    order = np.argsort(NAMES)
    np.testing.assert_allclose(proba, plain.predict_proba(X_test)[:, order], atol=1e-8)


def test_permuted_integer_labels_are_refused(digits, teacher):
    X, y, X_test, y_test = digits
    net, accuracy = teacher
    shifted = (y + 3) % 10
    with pytest.raises(ValueError, match=r"TorchBaseline\(module, classes="):
        SIMClassifier(TorchBaseline(net)).fit(X, shifted)
    # naming the columns' labels fixes it
    columns = (np.arange(10) + 3) % 10
    model = SIMClassifier(TorchBaseline(net, classes=columns)).fit(X, shifted)
    assert model.score(X_test, (y_test + 3) % 10) >= accuracy - 0.03


@pytest.mark.parametrize("classes, match", [
    (NAMES[:9], r"classes has 9 entries but the teacher has 10 outputs"),
    (list(NAMES) + ["ten"], r"classes has 11 entries but the teacher has 10 outputs"),
    (np.r_[NAMES[:9], NAMES[:1]], r"classes has duplicate labels \['zero'\]"),
    ([["zero", "one"]], r"classes must be a 1-D list"),
])
def test_bad_classes_are_refused(digits, teacher, classes, match):
    X, y, _, _ = digits
    keep = y < 9  # y's labels all among the 9 first names
    with pytest.raises(ValueError, match=match):
        SIMClassifier(TorchBaseline(teacher[0], classes=classes)).fit(X[keep], NAMES[y[keep]])


def test_labels_of_y_must_be_in_classes(digits, teacher):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match=r"y has labels \[10\] that are not in the "
                                         r"teacher's classes"):
        SIMClassifier(TorchBaseline(teacher[0], classes=np.arange(10))).fit(
            X, np.where(y == 0, 10, y))


def test_classes_absent_from_y(digits, teacher):
    """A y without some of the teacher's classes: without ``classes`` the
    output counts disagree (the error names both and suggests ``classes``);
    with it, ``classes_`` holds all ten and predictions may name any of them."""
    X, y, X_test, y_test = digits
    net, accuracy = teacher
    keep = y != 9
    with pytest.raises(ValueError, match=r"10 outputs but y has 9 classes.*classes="):
        SIMClassifier(TorchBaseline(net)).fit(X[keep], y[keep])
    model = SIMClassifier(TorchBaseline(net, classes=range(10))).fit(X[keep], y[keep])
    np.testing.assert_array_equal(model.classes_, np.arange(10))
    assert model.predict_proba(X_test).shape == (len(X_test), 10)
    assert model.score(X_test, y_test) >= accuracy - 0.05


@pytest.mark.parametrize("seed", range(4))
def test_weak_teacher_is_not_refused(digits, seed):
    """An untrained teacher is no classifier of y under any order of its
    columns (though its argmax may agree with y above chance under some)."""
    X, y, _, _ = digits
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10)).eval()
    model = SIMClassifier(TorchBaseline(net), alpha=1e-2).fit(X, y)
    assert model.predict(X).shape == y.shape
    # nor one barely trained (about 30% agreement under its best order, 3 to
    # 13% under the one used): too weak to tell a wrong order from chance
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    _train(net, X, torch.tensor(y), torch.nn.functional.cross_entropy, steps=6, lr=3e-3)
    SIMClassifier(TorchBaseline(net), alpha=1e-2).fit(X, (y + 3) % 10)


def test_single_logit_teacher(digits):
    """One logit: the score of the second of ``classes`` (negative, positive)."""
    X, y, X_test, y_test = digits
    labels = np.where(y % 2 == 0, "even", "odd")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 1))
    # the logit is positive for even digits: classes_[1] ("odd") is its negative
    target = torch.tensor((y % 2 == 0).astype(np.float32)).reshape(-1, 1)
    _train(net, X, target, torch.nn.functional.binary_cross_entropy_with_logits,
           steps=200)
    with torch.no_grad():
        logits = net(torch.tensor(X_test, dtype=torch.float32)).numpy().ravel()
    accuracy = np.mean((logits > 0) == (y_test % 2 == 0))
    assert accuracy > 0.8
    with pytest.raises(ValueError, match=r"classes=\['odd', 'even'\]"):
        SIMClassifier(TorchBaseline(net)).fit(X, labels)
    model = SIMClassifier(TorchBaseline(net, classes=["odd", "even"])).fit(X, labels)
    labels_test = np.where(y_test % 2 == 0, "even", "odd")
    assert model.score(X_test, labels_test) >= accuracy - 0.03
    np.testing.assert_array_equal(model.classes_[model.predict_proba(X_test).argmax(1)],
                                  model.predict(X_test))
    for classes in (["even"], ["odd", "even", "two"]):
        with pytest.raises(ValueError, match=r"classes .*negative class, then the positive"):
            SIMClassifier(TorchBaseline(net, classes=classes)).fit(X, labels)


@pytest.mark.parametrize("kind", ["memmap", "dask"])
def test_streamed_fit_checks_and_maps_the_columns(digits, teacher, tmp_path, kind):
    X, y, X_test, _ = digits
    net, _ = teacher
    np.save(tmp_path / "X.npy", X)
    X_streamed = np.load(tmp_path / "X.npy", mmap_mode="r")
    if kind == "dask":
        da = pytest.importorskip("dask.array")
        X_streamed = da.from_array(np.asarray(X_streamed), chunks=(300, 64))
    with pytest.raises(ValueError, match=r"do not match classes_ in sorted order"):
        SIMClassifier(TorchBaseline(net)).fit(X_streamed, NAMES[y])
    streamed = SIMClassifier(TorchBaseline(net, classes=NAMES)).fit(X_streamed, NAMES[y])
    local = SIMClassifier(TorchBaseline(net, classes=NAMES)).fit(X, NAMES[y])
    np.testing.assert_array_equal(streamed.classes_, local.classes_)
    np.testing.assert_allclose(streamed.predict_proba(X_test), local.predict_proba(X_test),
                               atol=1e-6)


def test_frozen_mlp_classes_are_its_columns(digits):
    """A fitted scikit-learn MLP names its columns (``classes_``): y may lack
    some of them, and must not have others."""
    X, y, X_test, y_test = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=150,
                            random_state=0).fit(X, y)
    keep = y != 9
    model = SIMClassifier(FrozenEstimator(mlp)).fit(X[keep], y[keep])
    np.testing.assert_array_equal(model.classes_, mlp.classes_)
    assert model.score(X_test, y_test) >= mlp.score(X_test, y_test) - 0.05
    with pytest.raises(ValueError, match=r"y has labels \[10\] that are not in the "
                                         r"teacher's classes_"):
        SIMClassifier(FrozenEstimator(mlp)).fit(X, np.where(y == 0, 10, y))

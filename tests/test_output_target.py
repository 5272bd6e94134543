"""Output rows match the teacher's raw outputs by default (output_target):
for each teacher kind the default fit equals the fit given the teacher's
outputs as baseline_outputs, output_target="y" fits the labels, and the
probabilities of a logit-matching classifier are the teacher's."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor

from sksim import SIMClassifier, SIMRegressor, TorchBaseline
from sksim.baselines import mlp_forward


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.3, random_state=0)


def _same_outputs(model, reference):
    for name in ("C_", "D_"):
        difference = abs(getattr(model, name) - getattr(reference, name)).toarray()
        assert np.max(difference, initial=0.0) == 0.0, name
    np.testing.assert_array_equal(model.intercept_, reference.intercept_)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # small teacher budget
@pytest.mark.parametrize("binary", [False, True])
def test_sklearn_classifier_outputs_match_its_logits(digits, binary):
    X_train, X_test, y_train, _ = digits
    if binary:
        y_train = (y_train >= 5).astype(int)
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0)
    mlp.fit(X_train, y_train)
    model = SIMClassifier(FrozenEstimator(mlp)).fit(X_train, y_train)
    _, logits = mlp_forward(mlp.coefs_, mlp.intercepts_, X_train)
    assert logits.shape[1] == (1 if binary else 10)
    given = SIMClassifier(FrozenEstimator(mlp)).fit(X_train, y_train,
                                                    baseline_outputs=logits)
    _same_outputs(model, given)
    assert model.C_.shape[0] == logits.shape[1]
    labels = SIMClassifier(FrozenEstimator(mlp), output_target="y").fit(X_train, y_train)
    assert labels.C_.shape[0] == (2 if binary else 10)  # one indicator column per class
    # the probabilities are the teacher's map of the fitted logits
    proba, teacher_proba = model.predict_proba(X_test), mlp.predict_proba(X_test)
    assert np.mean(np.abs(proba - teacher_proba)) < 0.03
    assert abs(log_loss(mlp.predict(X_test), proba, labels=mlp.classes_)
               - log_loss(mlp.predict(X_test), teacher_proba, labels=mlp.classes_)) < 0.1


def test_embedded_teacher_outputs_are_its_logits(digits):
    X_train, X_test, y_train, _ = digits
    model = SIMClassifier(random_state=0).fit(X_train, y_train)
    _, logits = mlp_forward(model.baseline_.coefs_, model.baseline_.intercepts_, X_train)
    given = SIMClassifier(random_state=0).fit(X_train, y_train, baseline_outputs=logits)
    _same_outputs(model, given)
    agreement = np.mean(model.predict(X_test) == model.baseline_.predict(X_test))
    assert agreement >= 0.97


def test_sklearn_regressor_outputs_match_its_predictions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = np.column_stack([X[:, 0] - X[:, 1] ** 2, np.sin(X[:, 2])])
    mlp = MLPRegressor(hidden_layer_sizes=(16,), max_iter=2000, random_state=0).fit(X, y)
    model = SIMRegressor(FrozenEstimator(mlp)).fit(X, y)
    given = SIMRegressor(FrozenEstimator(mlp)).fit(X, y, baseline_outputs=mlp.predict(X))
    _same_outputs(model, given)
    labels = SIMRegressor(FrozenEstimator(mlp), output_target="y").fit(X, y)
    assert not np.array_equal(labels.intercept_, model.intercept_)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # small teacher budget
def test_precomputed_states_without_outputs_fit_y(digits):
    X_train, _, y_train, _ = digits
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0)
    mlp.fit(X_train, y_train)
    states, _ = mlp_forward(mlp.coefs_, mlp.intercepts_, X_train)
    default = SIMClassifier().fit(X_train, y_train, states=states)
    labels = SIMClassifier(output_target="y").fit(X_train, y_train, states=states)
    _same_outputs(default, labels)


def test_teacher_output_count_mismatch_is_a_clear_error(digits):
    torch = pytest.importorskip("torch")
    X_train, _, y_train, _ = digits
    module = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(),
                                 torch.nn.Linear(8, 4)).double()
    with pytest.raises(ValueError, match="output_target='y'"):
        SIMClassifier(TorchBaseline(module, dtype="float64")).fit(X_train, y_train)
    model = SIMClassifier(TorchBaseline(module, dtype="float64"), output_target="y")
    model.fit(X_train, y_train)
    assert model.C_.shape[0] == 10


def _train(torch, module, X, y, epochs):
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    inputs = torch.as_tensor(X, dtype=torch.float64).reshape(-1, 1, 8, 8)
    targets = torch.as_tensor(y)
    for _ in range(epochs):
        for batch in torch.randperm(len(X)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
    return module.eval()


def test_torch_cnn_distilled_with_defaults_agrees_with_its_teacher(digits):
    """The case of the issue: a small CNN on digits, SIMClassifier with
    defaults (weight-shared, output rows on the teacher's logits) agrees
    with the teacher on >= 97% of the test set."""
    torch = pytest.importorskip("torch")
    X_train, X_test, y_train, _ = digits
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(128, 10)).double()
    _train(torch, cnn, X_train, y_train, epochs=30)
    teacher = TorchBaseline(cnn, input_shape=(1, 8, 8), dtype="float64")
    model = SIMClassifier(teacher, alpha=1e-4).fit(X_train, y_train)
    _, teacher_logits = teacher.record(X_test)
    agreement = np.mean(model.predict(X_test) == teacher_logits.argmax(axis=1))
    assert agreement >= 0.97, agreement
    labels = SIMClassifier(teacher, alpha=1e-4, output_target="y").fit(X_train, y_train)
    assert np.mean(labels.predict(X_test) == teacher_logits.argmax(axis=1)) <= agreement

"""to_torch(plain=True): a feed-forward model as a plain torch network (nn
layers and additions, dense kernels, unread channels removed) that equals
predict, runs with torch alone and exports to ONNX."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import digits_split

from sksim import SIMClassifier, SIMRegressor

torch = pytest.importorskip("torch")
nn = torch.nn
from test_graph_teachers import _fit
from test_weight_sharing import _tiny_cnn

from sksim import TorchBaseline
from sksim.plain_export import count_flops


def _only_nn_layers(module):
    for name, layer in module.named_modules():
        if name:
            assert type(layer).__module__.startswith("torch.nn.modules"), (name, layer)
    assert isinstance(module, torch.fx.GraphModule)


def _outputs(module, X):
    parameter = next(module.parameters())
    with torch.no_grad():
        return module(torch.as_tensor(X, dtype=parameter.dtype)).numpy()


@pytest.fixture(scope="module")
def digits():
    return digits_split()


@pytest.mark.parametrize("alpha", [1e-3, 3e-2])
def test_flat_feedforward_model_exports_as_a_plain_network(digits, alpha):
    X_train, X_test, y_train, _ = digits
    model = SIMClassifier(structure="feedforward", alpha=alpha, random_state=0).fit(
        X_train, y_train)
    plain = model.to_torch(plain=True, dtype=torch.float64)
    _only_nn_layers(plain)
    np.testing.assert_allclose(_outputs(plain, X_test), model.decision_function(X_test),
                               rtol=0, atol=1e-10)
    single = model.to_torch(plain=True)
    assert next(single.parameters()).dtype == torch.float32
    np.testing.assert_allclose(_outputs(single, X_test), model.decision_function(X_test),
                               rtol=1e-4, atol=1e-4)
    # every state left in the network is read, and none is constant zero
    A, C = model.A_.toarray(), model.C_.toarray()
    read = (np.abs(A).sum(axis=0) + np.abs(C).sum(axis=0)) > 0
    widths = [layer.out_features for layer in plain.modules()
              if isinstance(layer, nn.Linear) and layer.in_features == X_test.shape[1]]
    assert sum(widths[:-1]) <= read.sum()
    assert count_flops(plain, (X_test.shape[1],)) <= sum(
        layer.weight.numel() for layer in plain.modules() if isinstance(layer, nn.Linear))


def test_unread_states_are_removed_with_their_rows(digits):
    X_train, X_test, y_train, _ = digits
    model = SIMClassifier(structure="feedforward", alpha=3e-2, random_state=0).fit(
        X_train, y_train)
    A, C = model.A_.toarray(), model.C_.toarray()
    unread = ((np.abs(A).sum(axis=0) + np.abs(C).sum(axis=0)) == 0).sum()
    assert unread > 0  # the penalty left states nothing reads
    plain = model.to_torch(plain=True, dtype=torch.float64)
    hidden = sum(layer.out_features for layer in plain.modules()
                 if isinstance(layer, nn.Linear) and layer.in_features == X_test.shape[1]
                 and layer.out_features != 10)
    assert hidden <= model.n_states_ - unread


def test_models_with_feedback_are_refused(digits):
    X_train, _, y_train, _ = digits
    from sksim._arrays import forward_blocks

    implicit = SIMClassifier(alpha=1e-3, random_state=0).fit(X_train[:300], y_train[:300])
    assert forward_blocks(implicit.A_) is None  # the fit has feedback
    with pytest.raises(ValueError, match="without feedback"):
        implicit.to_torch(plain=True)
    X = np.random.default_rng(0).normal(size=(40, 2 * 7 * 7))
    baseline = TorchBaseline(_tiny_cnn(), input_shape=(2, 7, 7), dtype="float64")
    logits = baseline.record(X)[1]
    lateral = SIMRegressor(baseline, alpha=1e-3, lateral_kernel=3).fit(X, logits)
    with pytest.raises(ValueError, match="without lateral links"):
        lateral.to_torch(plain=True)


@pytest.mark.parametrize("name", ["resnet", "option_a", "vgg", "clipped", "functional",
                                  "avg_pooled"])
def test_weight_shared_models_export_in_the_teachers_topology(name):
    model, X = _fit(name)
    plain = model.to_torch(plain=True, dtype=torch.float64)
    _only_nn_layers(plain)
    np.testing.assert_allclose(_outputs(plain, X), model.predict(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(_outputs(model.to_torch(plain=True), X), model.predict(X),
                               rtol=1e-4, atol=1e-4)
    if name == "resnet":  # the shortcut additions of the teacher's graph
        assert "add" in plain.code


def test_unread_channels_are_removed_from_the_convolutions():
    X = np.random.default_rng(0).uniform(size=(60, 2 * 7 * 7))
    baseline = TorchBaseline(_tiny_cnn(head_pool=False), input_shape=(2, 7, 7),
                             dtype="float64")
    logits = baseline.record(X)[1]
    model = SIMRegressor(baseline, alpha=0.3, kappa=0.6).fit(X, logits)
    plain = model.to_torch(plain=True, dtype=torch.float64)
    convs = [layer for layer in plain.modules() if isinstance(layer, nn.Conv2d)]
    assert sum(conv.out_channels for conv in convs) < 4 + 5
    np.testing.assert_allclose(_outputs(plain, X), model.predict(X), rtol=0, atol=1e-9)


def test_plain_network_runs_with_torch_alone(digits, tmp_path):
    X_train, X_test, y_train, _ = digits
    model = SIMClassifier(structure="feedforward", random_state=0).fit(X_train, y_train)
    plain = model.to_torch(plain=True, dtype=torch.float64)
    torch.save(plain, tmp_path / "plain.pt")
    np.save(tmp_path / "X.npy", X_test)
    code = (
        "import sys; sys.modules['sksim'] = None\n"  # any import of sksim fails
        "import numpy as np, torch\n"
        f"module = torch.load({str(tmp_path / 'plain.pt')!r}, weights_only=False)\n"
        f"X = torch.as_tensor(np.load({str(tmp_path / 'X.npy')!r}))\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, module(X).detach().numpy())\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"),
                               model.decision_function(X_test), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["flat", "resnet"])
def test_onnx_export_gives_the_same_outputs(digits, kind, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    if kind == "flat":
        X_train, X, y_train, _ = digits
        model = SIMClassifier(structure="feedforward", random_state=0).fit(X_train, y_train)
        expected = model.decision_function(X)
    else:
        model, X = _fit("resnet")
        expected = model.predict(X)
    plain = model.to_torch(plain=True)
    path = tmp_path / "model.onnx"
    example = torch.as_tensor(X[:4], dtype=torch.float32)
    torch.onnx.export(plain, (example,), str(path), input_names=["u"], output_names=["y"],
                      dynamic_shapes={"u": {0: torch.export.Dim("batch")}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"u": np.asarray(X, dtype=np.float32)})
    np.testing.assert_allclose(onnx_out, _outputs(plain, X), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-4)



def test_a_diagonal_shortcut_kernel_exports_as_one_scale_per_channel():
    """A fitted identity shortcut (a diagonal 1x1 kernel) is a depthwise
    Conv2d, C multiply-adds per position instead of C^2, same outputs."""
    model, X = _fit("resnet", adaptive_l1=2.0, alpha=1e-3)
    links = model._shared_model.structure.links[2]
    assert links[1].kind == "conv" and links[1].kernel_size == 1  # the shortcut
    kernel = model._shared_model.kernels[2][1]
    kernel[:] = np.diag(np.linspace(0.03, 0.01, kernel.shape[0]))
    plain = model.to_torch(plain=True, dtype=torch.float64)
    depthwise = [conv for conv in plain.modules()
                 if isinstance(conv, nn.Conv2d) and conv.groups > 1]
    assert len(depthwise) == 1 and depthwise[0].groups == kernel.shape[0]
    np.testing.assert_allclose(_outputs(plain, X), model.predict(X), rtol=0, atol=1e-12)

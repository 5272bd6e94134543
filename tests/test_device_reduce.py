"""The reduce stage on a torch device (``TorchBaseline(gram_backend="torch")``):
the same per-block Gram problems as the host's numpy path, up to roundoff, on
every kind of link (3x3 and strided convolutions, 1x1 and option-A
shortcuts, pools, flat heads), with positions drawn per image, several
sub-batches, the model's own states as inputs and without centring. Run on
the CPU device here; a GPU runs the same code."""

import warnings

import numpy as np
import pytest
from helpers import assert_equals_unrolled, exact_inf_norm

from sksim import SIMRegressor
from sksim import weight_sharing as ws

torch = pytest.importorskip("torch")
from test_graph_teachers import _data, _teacher  # noqa: E402

from sksim import TorchBaseline  # noqa: E402

_host_accumulate = ws.accumulate_block_problems


def _both_backends(compared):
    """An accumulate_block_problems that reduces the same batches on the host
    and on the CPU torch device, records both, and returns the host's."""

    def accumulate(structure, batches, scales, **options):
        batches = list(batches)
        assert options.pop("device") is None  # the default backend on a CPU teacher
        host = _host_accumulate(structure, batches, scales, **options)
        device = _host_accumulate(structure, batches, scales, device=torch.device("cpu"),
                                  **options)
        compared.append((host, device))
        return host

    return accumulate


@pytest.mark.parametrize("name", ["resnet", "option_a", "vgg", "avg_pooled", "clipped"])
@pytest.mark.parametrize("params", [{}, {"positions_per_image": 5},
                                    {"state_inputs": "model"}, {"fit_intercept": False}])
def test_device_grams_equal_the_hosts(name, params, monkeypatch):
    compared = []
    monkeypatch.setattr(ws, "accumulate_block_problems", _both_backends(compared))
    monkeypatch.setattr(ws, "_DESIGN_BYTES", 20_000)  # several sub-batches per batch
    baseline = _teacher(name)
    baseline.batch_size = 25  # and several batches
    X = _data()
    _, outputs = baseline.record(X)
    SIMRegressor(baseline, alpha=1e-4, kappa=0.6, random_state=0, **params).fit(
        X, outputs, baseline_outputs=outputs)
    assert compared
    for host, device in compared:
        assert len(host) == len(device)
        for h, d in zip(host, device):
            assert d.n_rows == h.n_rows
            for field in ("gram", "correlations", "target_sq", "design_mean",
                          "target_mean"):
                a, b = getattr(h, field), getattr(d, field)
                assert b.shape == a.shape and b.dtype == np.float64
                np.testing.assert_allclose(b, a, rtol=1e-10,
                                           atol=1e-12 * max(1.0, np.abs(a).max()))


def test_a_fit_reduced_with_torch_is_exact_and_equals_the_hosts():
    X = _data()
    fits = {}
    for backend in ("numpy", "torch"):
        baseline = _teacher("resnet")
        baseline.gram_backend = backend
        _, outputs = baseline.record(X)
        fits[backend] = SIMRegressor(baseline, alpha=1e-4, kappa=0.6).fit(
            X, outputs, baseline_outputs=outputs)
    model = fits["torch"]
    assert exact_inf_norm(model.A_) <= 0.6
    assert_equals_unrolled(model, _data(25, seed=1))
    np.testing.assert_allclose(model.predict(X), fits["numpy"].predict(X), rtol=1e-6,
                               atol=1e-8)


def test_gram_backend_is_chosen_from_the_device_and_checked():
    module = torch.nn.Linear(3, 2)
    assert TorchBaseline(module).gram_device() is None  # the CPU: numpy's syrk
    assert TorchBaseline(module, gram_backend="numpy").gram_device() is None
    assert TorchBaseline(module, gram_backend="torch").gram_device() == torch.device("cpu")
    baseline = _teacher("resnet")
    baseline.gram_backend = "gpu"
    X = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not fitted flat instead
        with pytest.raises(ValueError, match="gram_backend must be"):
            SIMRegressor(baseline, alpha=1e-4).fit(X, X[:, :3])

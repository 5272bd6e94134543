"""The one-shot pruning anchors of examples/_pruning.py (issue 23, item 3):
BatchNorm folding, exact counts, the least-squares refit, Wanda and
SparseGPT on tiny networks."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    if str(EXAMPLES) not in sys.path:  # the examples import their siblings
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


P = _load("_pruning")


def _randomize_batchnorm(module, generator):
    """Running statistics and affine parameters far from the identity."""
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(n, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=generator))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return module.eval()


def _chain(seed=0):
    torch.manual_seed(seed)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5))
    return _randomize_batchnorm(net, torch.Generator().manual_seed(seed))


class _Residual(torch.nn.Module):
    """conv-BN-ReLU, then a block conv-BN + identity, ReLU, then a strided
    block with an option-A shortcut (subsample, zero channels), linear head."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.relu(self.bn(self.stem(x)))
        x = self.relu(self.bn1(self.conv1(x)) + x)
        shortcut = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
        x = self.relu(self.bn2(self.conv2(x)) + shortcut)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _images(n, seed=1, dtype=torch.float32):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _residual(seed=0):
    torch.manual_seed(seed)
    return _randomize_batchnorm(_Residual(), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("build", [_chain, _residual])
def test_fold_batchnorm_keeps_the_outputs(build):
    net = build()
    folded = P.fold_batchnorm(net)
    images = _images(16)
    with torch.no_grad():
        expected, got = net(images), folded(images)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # a copy
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert P.count_nonzero(folded) == P.count_nonzero(net)


def test_layers_in_call_order_and_uniform_allocation_is_exact():
    net = _residual()
    assert P.prunable_layers(net) == ["stem", "conv1", "conv2", "fc"]
    sizes = {"stem": 108, "conv1": 144, "conv2": 288, "fc": 24}
    for total in (0, 1, 101, 281, 564):
        allocation = P.uniform_allocation(net, total)
        assert sum(allocation.values()) == total
        for name, size in sizes.items():  # each share within one of its exact value
            assert abs(allocation[name] - total * size / 564) < 1


@pytest.mark.parametrize("method", sorted(P.METHODS))
@pytest.mark.parametrize("build", [_chain, _residual])
def test_every_method_keeps_exactly_the_allocated_weights(method, build):
    net = build()
    names = P.prunable_layers(net)
    sizes = [net.get_submodule(n).weight.numel() for n in names]
    allocation = {n: int(s * f) for n, s, f in zip(names, sizes, (0.5, 0.3, 0.2, 0.7))}
    pruned = P.METHODS[method](net, allocation, _images(32))
    for name in names:
        assert int((pruned.get_submodule(name).weight != 0).sum()) == allocation[name]
    assert P.count_nonzero(pruned) == sum(allocation.values())


def _pre_activations(module, images):
    return [P.capture(module, name, images)[1] for name in P.prunable_layers(module)]


@pytest.mark.parametrize("build", [_chain, _residual])
def test_refit_with_every_weight_kept_reproduces_the_teacher(build):
    net = build().double()
    images = _images(64, dtype=torch.float64)
    full = {n: net.get_submodule(n).weight.numel() for n in P.prunable_layers(net)}
    refit = P.magnitude_ls_refit(net, full, images)
    folded = P.fold_batchnorm(net)
    for got, expected in zip(_pre_activations(refit, images),
                             _pre_activations(folded, images)):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-8)


def test_refit_rows_are_the_least_squares_solutions_on_the_kept_columns():
    nn = torch.nn
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(5, 4, 3, stride=2, padding=1)).double().eval()
    images = _images(40, dtype=torch.float64)
    allocation = {"0": 60, "2": 70}
    refit = P.magnitude_ls_refit(net, allocation, images)
    layer = net[2]
    mask = P.magnitude_mask(layer.weight, 70).flatten(1).numpy()
    # design: the refit model's own inputs to layer 2 (its layer 0 refit already)
    inputs = P.capture(refit, "2", images)[0]
    X = torch.nn.functional.unfold(inputs, 3, padding=1, stride=2)
    X = X.transpose(1, 2).reshape(-1, 45).numpy()
    with torch.no_grad():
        T = net(images).permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    weight = refit[2].weight.detach().flatten(1).numpy()
    teacher = layer.weight.detach().flatten(1).numpy()
    live = np.any(X != 0, axis=0)
    assert 0 < np.sum(mask & ~live)  # this case has dead kept columns too
    for row in range(4):
        dead = np.flatnonzero(mask[row] & ~live)  # undetermined: the teacher's value
        np.testing.assert_array_equal(weight[row, dead], teacher[row, dead])
        kept = np.flatnonzero(mask[row] & live)
        A = np.hstack([X[:, kept], np.ones((X.shape[0], 1))])
        solution = np.linalg.lstsq(A, T[:, row], rcond=None)[0]
        np.testing.assert_allclose(weight[row, kept], solution[:-1], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(refit[2].bias[row].item(), solution[-1], rtol=1e-8,
                                   atol=1e-10)
        assert np.all(weight[row, ~mask[row]] == 0)


def _random_layer(seed=0, n_out=16, d=200, n=600):
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(n_out, d, generator=generator, dtype=torch.float64)
    # correlated inputs, so that the Hessian-aware choice and update matter
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64) / d ** 0.5
    X = torch.randn(n, d, generator=generator, dtype=torch.float64) @ (
        torch.eye(d, dtype=torch.float64) + mixing)
    return W, X


def test_sparsegpt_with_nothing_pruned_returns_the_weights_unchanged():
    W, X = _random_layer()
    gram = X.T @ X
    gram[:, 7] = gram[7, :] = 0  # a dead input column
    # no entry pruned: every OBS error is exactly zero, whatever the dampening
    assert torch.equal(P.sparsegpt_weights(W, gram, W.numel()), W)
    net = _chain()
    full = {n: net.get_submodule(n).weight.numel() for n in P.prunable_layers(net)}
    pruned, folded = P.sparsegpt(net, full, _images(16)), P.fold_batchnorm(net)
    for name in full:
        assert torch.equal(pruned.get_submodule(name).weight,
                           folded.get_submodule(name).weight)


def test_sparsegpt_at_half_sparsity_reconstructs_better_than_magnitude():
    W, X = _random_layer()
    keep = W.numel() // 2
    sparse = P.sparsegpt_weights(W, X.T @ X, keep)
    magnitude = W * P.magnitude_mask(W, keep)
    assert int((sparse != 0).sum()) == keep
    def error(V):
        return float(((X @ (W - V).T) ** 2).sum())

    assert error(sparse) < 0.85 * error(magnitude)  # about 0.7 on this layer
    # and no better than the least-squares optimum on its own mask
    optimum = torch.zeros_like(W)
    for row in range(W.shape[0]):
        kept = sparse[row] != 0
        optimum[row, kept] = torch.linalg.lstsq(X[:, kept], X @ W[row]).solution
    assert error(optimum) <= error(sparse)


def test_wanda_keeps_exactly_k_per_row():
    nn = torch.nn
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 4)).eval()
    images = torch.rand(50, 12)
    pruned = P.wanda(net, {"0": 6 * 5, "2": 4 * 3 + 2}, images)
    assert (pruned[0].weight != 0).sum(1).tolist() == [5] * 6
    per_row = (pruned[2].weight != 0).sum(1)
    assert sorted(per_row.tolist()) == [3, 3, 4, 4]
    # the kept entries of a row are its largest |W_ij| ||X_j||
    norms = images.norm(dim=0)
    score = net[0].weight.abs() * norms
    kept = pruned[0].weight != 0
    assert torch.all(score[kept].reshape(6, 5).min(1).values
                     >= score[~kept].reshape(6, 7).max(1).values)


def test_sim_allocation_reads_the_per_block_counts():
    net = _chain()
    fit = {"nonzero": 200, "kernel_nonzeros_per_block": [100, 60]}
    assert P.sim_allocation(fit, net, (3, 8, 8)) == ({"0": 100, "3": 60, "8": 40}, 0)
    with pytest.raises(ValueError, match="several links"):
        P.sim_allocation({"nonzero": 100, "kernel_nonzeros_per_block": [50, 20, 10]},
                         _residual(), (3, 8, 8))


def test_sim_allocation_gives_each_layer_its_own_link_and_counts_the_shortcuts():
    fit = {"nonzero": 104, "kernel_nonzeros_per_link": [[50], [20], [10, 4]]}
    allocation, extra = P.sim_allocation(fit, _residual(), (3, 8, 8))
    assert allocation == {"stem": 50, "conv1": 20, "conv2": 10, "fc": 20}
    assert extra == 4 and sum(allocation.values()) + extra == fit["nonzero"]


# ------------------------------------------------------- L1 filter pruning
def test_filter_prunable_layers_skip_maps_added_to_a_shortcut():
    # chain: both convs' maps reach one layer through BN / ReLU / pool / flatten
    assert P.filter_prunable(_chain()) == {"0": "3", "3": "8"}
    # residual: the stem and conv2 are added to shortcuts, conv1 is read by its add
    assert P.filter_prunable(_residual()) == {}


def test_l1_filter_removes_whole_channels_and_counts_their_flops():
    teacher = _chain()
    from sksim.plain_export import count_flops

    dense = count_flops(torch.nn.Sequential(torch.nn.Unflatten(1, (3, 8, 8)), teacher),
                        (3 * 8 * 8,))
    assert P.structured_flops(teacher, (3, 8, 8)) == dense
    pruned, masks = P.l1_filter(teacher, 0.5)
    # the 3 and 4 filters of smallest L1 norm (of the unfolded kernels) are out
    for name, n_out in (("0", 6), ("3", 8)):
        norms = teacher.get_submodule(name).weight.abs().flatten(1).sum(1)
        dropped = set(torch.argsort(norms)[:n_out // 2].tolist())
        zero_rows = {c for c in range(n_out)
                     if not pruned.get_submodule(name).weight[c].any()
                     and pruned.get_submodule(name).bias[c] == 0}
        assert zero_rows == dropped
    # the pruned maps are 0: the outputs equal those of a network without the channels
    images = _images(16)
    kept0 = [c for c in range(6) if pruned[0].weight[c].any()]
    kept3 = [c for c in range(8) if pruned[3].weight[c].any()]
    small = torch.nn.Sequential(
        torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))
    with torch.no_grad():
        small[0].weight.copy_(pruned[0].weight[kept0])
        small[0].bias.copy_(pruned[0].bias[kept0])
        small[2].weight.copy_(pruned[3].weight[kept3][:, kept0])
        small[2].bias.copy_(pruned[3].bias[kept3])
        small[6].weight.copy_(pruned[8].weight[:, kept3])
        small[6].bias.copy_(pruned[8].bias)
        torch.testing.assert_close(small(images), pruned(images), rtol=1e-5, atol=1e-5)
    small_flops = count_flops(torch.nn.Sequential(torch.nn.Unflatten(1, (3, 8, 8)), small),
                              (3 * 8 * 8,))
    assert P.structured_flops(pruned, (3, 8, 8)) == small_flops < dense
    assert all(bool((~mask).any()) for mask in masks.values())


def test_l1_filter_at_flops_reaches_the_largest_count_within_the_target():
    teacher = _chain()
    dense = P.structured_flops(teacher, (3, 8, 8))
    pruned, _, fraction = P.l1_filter_at_flops(teacher, 0.6 * dense, (3, 8, 8))
    reached = P.structured_flops(pruned, (3, 8, 8))
    assert reached <= 0.6 * dense
    # one filter fewer out of the first layer would exceed the target
    assert P.structured_flops(P.l1_filter(teacher, fraction - 1 / 6)[0], (3, 8, 8)) > \
        0.6 * dense

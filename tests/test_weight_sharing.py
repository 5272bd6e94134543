"""Weight-shared (convolutional) SIM: equivalence with the unrolled flat
model, exact well-posedness, exact row problems, distillation of a trained CNN
(graph teachers: residual, pooled, functional, leaky: tests/test_graph_teachers.py)."""

import math
from itertools import pairwise

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import assert_equals_unrolled, digits_split, exact_inf_norm
from sklearn.model_selection import GridSearchCV

from sksim import SIMClassifier, SIMRegressor
from sksim._attributes import FITTED_ATTRIBUTES
from sksim.blocks import Link, Structure, block_offsets, link_patches, unroll
from sksim.design import GramAccumulator

torch = pytest.importorskip("torch")
nn = torch.nn
from sksim import TorchBaseline  # noqa: E402


def _tiny_cnn(seed=0, batch_norm=True, head_pool=True):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(2, 4, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU()]
    if head_pool:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 6), nn.ReLU(),
                   nn.Linear(6, 3)]
    else:
        layers += [nn.Flatten(), nn.Linear(5 * 4 * 4, 3)]
    module = nn.Sequential(*layers).double()
    if batch_norm:
        with torch.no_grad():
            module[1].running_mean.uniform_(-0.5, 0.5)
            module[1].running_var.uniform_(0.5, 2.0)
    return module


@pytest.fixture(scope="module")
def tiny_problem():
    module = _tiny_cnn()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2 * 7 * 7))
    baseline = TorchBaseline(module, input_shape=(2, 7, 7), dtype="float64")
    _, logits = baseline.record(X)
    return module, baseline, X, logits


def _split_blocks(structure, states):
    """Flattened states (n, n_states) as the list of per-block arrays."""
    edges = block_offsets(structure)
    return [states[:, a:b] for a, b in pairwise(edges)]


_exact_inf_norm = exact_inf_norm
_assert_equals_unrolled = assert_equals_unrolled


@pytest.mark.parametrize("lateral_kernel", [None, 3])
@pytest.mark.parametrize("row_bound, relax", [(None, 1.0), (0.5, 1.0), (0.5, 0.1)])
def test_weight_shared_model_equals_its_unrolled_flat_model(tiny_problem, lateral_kernel,
                                                            row_bound, relax):
    """Predictions and equilibrium of the weight-shared model equal those of
    the flat implicit model built from the unrolled A, B, C, D (solved by the
    flat Gauss-Seidel kernel), and ||A_unrolled||_inf <= kappa exactly (also
    with the relaxed re-solve)."""
    _, baseline, X, logits = tiny_problem
    model = SIMRegressor(baseline, alpha=1e-4, kappa=0.6, lateral_kernel=lateral_kernel,
                         row_bound=row_bound, relax=relax).fit(X, logits,
                                                               baseline_outputs=logits)
    assert model.structure_.block_shapes == ((4, 7, 7), (5, 4, 4), (6,))
    assert model.block_scales_[0] == 1.0  # block 0 reads the input, lateral link or not
    A, B, C, D = model.A_, model.B_, model.C_, model.D_
    assert A.shape == (model.n_states_, model.n_states_) == (4 * 49 + 5 * 16 + 6,) * 2
    assert _exact_inf_norm(A) <= 0.6
    if row_bound is None:
        assert model.block_row_bounds_ is None
    else:
        # relative to the teacher's own rescaled kernels, block by block
        maps = baseline.trace(X)
        teacher_norms = [np.abs(k[0]).sum(axis=1).max() for k in maps.kernels]
        scales = np.concatenate([[1.0], model.block_scales_])
        expected = [row_bound * n * scales[b + 1] / scales[b] if b else row_bound * n
                    for b, n in enumerate(teacher_norms)]
        expected.append(row_bound * np.abs(maps.head_kernels[0]).sum(axis=1).max()
                        / model.block_scales_[-1])
        np.testing.assert_allclose(model.block_row_bounds_, expected, rtol=1e-12)
        rows = sp.csr_array(sp.hstack([A, B]))
        for b, (start, stop) in enumerate(zip(block_offsets(model.structure_)[:-1],
                                              block_offsets(model.structure_)[1:])):
            assert _exact_inf_norm(rows[start:stop]) <= model.block_row_bounds_[b]
        assert _exact_inf_norm(sp.hstack([C, D])) <= model.block_row_bounds_[-1]
        assert np.mean(model.state_row_bound_multipliers_ > 0) >= 0.5  # it binds
    _assert_equals_unrolled(model, np.random.default_rng(1).normal(size=(25, X.shape[1])))
    # certificates from the kernels equal those of the unrolled matrices
    norm = _exact_inf_norm
    assert model.lipschitz_bound_ == pytest.approx(
        norm(C) * norm(B) / (1 - norm(A)) + norm(D), rel=1e-12)
    path = np.abs(C.toarray()) @ np.linalg.solve(
        np.eye(A.shape[0]) - np.abs(A.toarray()), np.abs(B.toarray())) + np.abs(D.toarray())
    assert model.lipschitz_path_bound_ == pytest.approx(path.sum(axis=1).max(), rel=1e-9)
    # parameters: kernel entries, not unrolled copies
    kernels = [k for block in model.kernels_ for k in block] + model.output_kernels_
    assert model.n_nonzero_ == sum(np.count_nonzero(k) for k in kernels)
    assert model.n_nonzero_ < A.nnz + B.nnz + C.nnz + D.nnz
    if lateral_kernel:
        assert any(link.source == 0 for link in model.structure_.links[0])


def test_teacher_unrolls_to_its_own_states(tiny_problem):
    """The traced teacher (BatchNorm folded), unrolled, reproduces the states
    and outputs recorded from its graph; its rescaled kernels meet kappa."""
    _, baseline, X, _ = tiny_problem
    maps = baseline.trace(X)
    A, B, C, D = unroll(maps.structure, maps.kernels, maps.head_kernels)
    states, outputs = baseline.record(X)
    bias = np.concatenate([np.repeat(b, int(np.prod(s)) // s[0])
                           for b, s in zip(maps.biases, maps.structure.block_shapes)])
    post = np.maximum(states, 0.0)
    np.testing.assert_allclose(states, post @ A.T + X @ B.T + bias, atol=1e-12)
    np.testing.assert_allclose(outputs, post @ C.T + X @ D.T + maps.head_bias, atol=1e-12)
    from sksim.weight_sharing import block_scales

    scales = block_scales(maps.structure, maps.kernels, 0.9)
    scaled = [np.repeat(s, int(np.prod(shape)))
              for s, shape in zip(scales, maps.structure.block_shapes)]
    scale = np.concatenate(scaled)
    A_scaled = sp.diags(scale) @ A @ sp.diags(1 / scale)
    assert _exact_inf_norm(sp.csr_array(A_scaled)) <= 0.9 * (1 + 1e-12)


def test_streamed_gram_equals_the_explicit_patch_design():
    """GramAccumulator over uneven batches (one-pass merged centring) equals the
    Gram of the full, explicitly centred design."""
    rng = np.random.default_rng(3)
    W = rng.normal(size=(203, 6)) * [1, 10, 1e-3, 1, 5, 1] + [0, 100, 0, -3, 0, 1e3]
    T = W @ rng.normal(size=(6, 2)) + rng.normal(size=(203, 2))
    for fit_intercept in (True, False):
        accumulator = GramAccumulator(6, 2, fit_intercept)
        for a, b in ((0, 1), (1, 50), (50, 51), (51, 203)):
            accumulator.add(W[a:b], T[a:b])
        problem = accumulator.finish()
        Wc = W - W.mean(axis=0) if fit_intercept else W
        Tc = T - T.mean(axis=0) if fit_intercept else T
        np.testing.assert_allclose(problem.gram, Wc.T @ Wc / 203, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(problem.correlations, Tc.T @ Wc / 203, rtol=1e-10,
                                   atol=1e-9)
        np.testing.assert_allclose(problem.target_sq, (Tc**2).mean(axis=0), rtol=1e-10)


def test_patches_are_the_unrolled_rows():
    """A conv link's design rows are the rows of its unrolled matrix applied
    to the source: patch @ kernel equals unrolled @ source at every position."""
    rng = np.random.default_rng(4)
    structure = Structure((3, 6, 5), ((4, 3, 3),), ((Link(-1, "conv", 3, 2, 1),),),
                          (Link(0, "pool"),), 2)
    kernel = rng.normal(size=(4, 27))
    source = rng.normal(size=(7, 90))
    patches = link_patches(structure, structure.links[0][0], source)
    by_patches = (patches @ kernel.T).reshape(7, 9, 4).transpose(0, 2, 1).reshape(7, -1)
    _, B, _, _ = unroll(structure, [[kernel]], [rng.normal(size=(2, 4))])
    np.testing.assert_allclose(by_patches, source @ B.T.toarray(), atol=1e-12)


def _cvxpy_objective(W, z, n_bounded, kappa, alpha):
    cp = pytest.importorskip("cvxpy")
    w = cp.Variable(W.shape[1])
    b = cp.Variable()
    m = W.shape[0]
    objective = cp.sum_squares(z - W @ w - b) / (2 * m) + alpha * cp.norm1(w)
    constraints = [cp.norm1(w[:n_bounded]) <= kappa] if n_bounded else []
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                  tol_feas=1e-12)
    return problem.value


@pytest.mark.parametrize("kappa", [0.95, 0.05])
def test_block_rows_match_cvxpy_on_the_patch_design(tiny_problem, kappa):
    """The rows of the second conv block solved on the streamed patch Gram
    reach the optimum of each row's problem on the explicit patch design
    (cvxpy + Clarabel), also when the kappa bound is active."""
    from sksim import weight_sharing as ws

    _, baseline, X, _ = tiny_problem
    maps = baseline.trace(X)
    structure = ws.fitting_structure(maps.structure)
    scales = ws.block_scales(structure, maps.kernels, 0.95)  # kappa=0.05 then binds
    problems = ws.accumulate_block_problems(
        structure, ((X[rows], pre) for rows, pre, _ in baseline.iter_batches(X)),
        scales, fit_intercept=True)
    alpha = 1e-3
    kernels, intercept, rows = ws.solve_block_rows(
        structure, structure.links[1], problems[1], alpha=alpha, l1_ratio=1.0,
        kappa=kappa, row_bound=np.inf, tol=1e-10, max_iter=100_000)
    states, _ = baseline.record(X)
    blocks = _split_blocks(structure, states)
    post0 = np.maximum(blocks[0] * scales[0], 0.0)
    W = link_patches(structure, structure.links[1][0], post0)
    Z = (blocks[1] * scales[1]).reshape(len(X), 5, 16).transpose(0, 2, 1).reshape(-1, 5)
    active = 0
    for c in range(5):
        reference = _cvxpy_objective(W, Z[:, c], W.shape[1], kappa, alpha)
        residual = Z[:, c] - W @ kernels[0][c] - intercept[c]
        ours = residual @ residual / (2 * len(Z)) + alpha * np.abs(kernels[0][c]).sum()
        assert ours == pytest.approx(rows.objective[c], rel=1e-8)
        assert abs(ours - reference) <= 1e-6 * reference, (c, ours, reference)
        assert math.fsum(np.abs(kernels[0][c])) <= kappa
        active += rows.multiplier[c] > 0
    if kappa == 0.05:
        assert active > 0  # the bound binds


@pytest.fixture(scope="module")
def digits_cnn():
    """A two-conv CNN trained on digits (8x8) in the test."""
    X_train, X_test, y_train, y_test = digits_split()
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(cnn.parameters(), lr=3e-3)
    inputs = torch.as_tensor(X_train, dtype=torch.float32).reshape(-1, 1, 8, 8)
    targets = torch.as_tensor(y_train)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(cnn(inputs), targets).backward()
        optimizer.step()
    return cnn, X_train, X_test, y_train, y_test


def _logits(cnn, X):
    with torch.no_grad():
        return cnn(torch.as_tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8)).double().numpy()


def test_distilled_cnn_agrees_with_its_teacher(digits_cnn):
    cnn, X_train, X_test, y_train, _ = digits_cnn
    n_teacher = sum(p.numel() for p in cnn.parameters() if p.dim() > 1)
    model = SIMClassifier(TorchBaseline(cnn, input_shape=(1, 8, 8)), alpha=1e-3).fit(
        X_train, y_train, baseline_outputs=_logits(cnn, X_train))
    assert model.structure_ is not None and len(model.kernels_) == 3
    agreement = np.mean(model.predict(X_test) == _logits(cnn, X_test).argmax(axis=1))
    assert agreement >= 0.97, agreement
    assert model.n_nonzero_ < n_teacher
    assert _exact_inf_norm(model.A_) <= model.kappa
    assert model.state_scales_.shape == (model.n_states_,)
    assert model.block_scales_[0] == 1.0 and np.all(np.diff(model.block_scales_) <= 0)


def test_weight_sharing_in_gridsearch_and_subsampled_positions(digits_cnn):
    cnn, X_train, _, y_train, _ = digits_cnn
    baseline = TorchBaseline(cnn, input_shape=(1, 8, 8))
    search = GridSearchCV(SIMClassifier(baseline, positions_per_image=20),
                          {"alpha": [1e-3, 1e-2]}, cv=2).fit(X_train, y_train)
    best = search.best_estimator_
    assert best.structure_.block_shapes[0] == (8, 8, 8)
    assert np.all(best.state_duality_gaps_ <= best.tol * best.state_objectives_ + 1e-12)


def test_flat_model_on_request_and_for_mlp_teachers(digits_cnn):
    cnn, X_train, _, y_train, _ = digits_cnn
    flat = SIMClassifier(TorchBaseline(cnn, input_shape=(1, 8, 8)), alpha=1e-2,
                         weight_sharing=False).fit(X_train[:300], y_train[:300])
    assert not hasattr(flat, "structure_")
    assert flat.n_nonzero_ == sum(getattr(flat, n).nnz for n in ("A_", "B_", "C_", "D_"))
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    model = SIMClassifier(TorchBaseline(mlp), alpha=1e-2).fit(X_train[:300],
                                                              y_train[:300])
    assert not hasattr(model, "structure_")  # "auto": no conv block, flat model


def test_weight_sharing_true_needs_a_torch_teacher():
    X = np.random.default_rng(0).normal(size=(4, 64))
    with pytest.raises(ValueError, match="weight_sharing=True needs a TorchBaseline"):
        SIMClassifier(weight_sharing=True).fit(X, [0, 1, 2, 0], states=X[:, :5])


@pytest.mark.parametrize("lateral_kernel, row_bound", [(None, None), (3, None),
                                                       (None, 0.8)])
def test_weight_shared_model_round_trips_without_pickle(tiny_problem, tmp_path,
                                                        lateral_kernel, row_bound):
    from test_persistence import _assert_same_model

    from sksim import load_model, save_model

    _, baseline, X, logits = tiny_problem
    model = SIMRegressor(baseline, alpha=1e-3, kappa=0.7, lateral_kernel=lateral_kernel,
                         row_bound=row_bound, relax=0.5,
                         output_target="y").fit(X, logits[:, 0])
    save_model(model, tmp_path / "cnn.npz")
    loaded = load_model(tmp_path / "cnn.npz")
    assert loaded.structure_ == model.structure_
    _assert_same_model(model, loaded, X)


@pytest.mark.parametrize("lateral_kernel", [None, 3])
def test_to_torch_matches_numpy_and_differentiates(tiny_problem, lateral_kernel):
    """Feed-forward models export as conv layers (no unrolled buffers), lateral
    ones through the unrolled operator; both match numpy and give gradients."""
    _, baseline, X, logits = tiny_problem
    model = SIMRegressor(baseline, alpha=1e-3, lateral_kernel=lateral_kernel).fit(
        X, logits, baseline_outputs=logits)
    module = model.to_torch()
    names = dict(module.named_buffers())
    assert "A" not in names  # weight-shared models export as blocks, lateral or not
    u = torch.as_tensor(X[:9])
    with torch.no_grad():
        np.testing.assert_allclose(module(u).numpy(), model.predict(X[:9]), atol=1e-10)
        np.testing.assert_allclose(module.equilibrium(u).numpy(), model.equilibrium(X[:9]),
                                   atol=1e-10)
    v = u.clone().requires_grad_()
    module(v).sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()
    if lateral_kernel is None:
        assert torch.autograd.gradcheck(module, (u[:2].clone().requires_grad_(),),
                                        eps=1e-6, atol=1e-6)


def test_numpy_and_torch_convolutions_agree(monkeypatch):
    """link_output uses torch's conv2d when torch is imported; the numpy
    im2col path (used without torch) gives the same values."""
    import sys

    from sksim.blocks import link_output

    rng = np.random.default_rng(5)
    structure = Structure((3, 9, 8), ((4, 5, 4),), ((Link(-1, "conv", 3, 2, 1),),),
                          (Link(0, "pool"),), 2)
    kernel = rng.normal(size=(4, 27))
    source = rng.normal(size=(6, 3 * 9 * 8))
    with_torch = link_output(structure, structure.links[0][0], kernel, source)
    monkeypatch.delitem(sys.modules, "torch")
    without = link_output(structure, structure.links[0][0], kernel, source)
    np.testing.assert_allclose(with_torch, without, rtol=0, atol=1e-12)


def test_blocks_fitted_on_the_models_own_states(tiny_problem):
    """state_inputs='model': block 0 (reading the input) is fitted as before;
    later blocks read the fitted model's own states of earlier blocks, and the
    result keeps every guarantee (exact kappa, equivalence with unrolling)."""
    from sksim import weight_sharing as ws
    from sksim.blocks import link_patches

    _, baseline, X, logits = tiny_problem
    params = {"alpha": 1e-3, "kappa": 0.6, "tol": 1e-10, "relax": 1.0}
    on_teacher = SIMRegressor(baseline, **params).fit(X, logits, baseline_outputs=logits)
    on_model = SIMRegressor(baseline, state_inputs="model", **params).fit(
        X, logits, baseline_outputs=logits)
    np.testing.assert_array_equal(on_model.kernels_[0][0], on_teacher.kernels_[0][0])
    assert not np.allclose(on_model.kernels_[1][0], on_teacher.kernels_[1][0])
    assert _exact_inf_norm(on_model.A_) <= 0.6
    # block 1's rows are optimal for the design built from the model's block 0
    states = on_model.equilibrium(X)
    post0 = _split_blocks(on_model.structure_, states)[0]
    W = link_patches(on_model.structure_, on_model.structure_.links[1][0], post0)
    teacher_states, _ = baseline.record(X)
    z1 = _split_blocks(on_model.structure_, teacher_states)[1] * on_model.block_scales_[1]
    Z = z1.reshape(len(X), 5, 16).transpose(0, 2, 1).reshape(-1, 5)
    # block_alpha="positions": alpha * rms(targets) * rms(design) / sqrt(16 positions)
    centred_rms = [np.sqrt(np.mean((M - M.mean(axis=0)) ** 2)) for M in (W, Z)]
    alpha = 1e-3 * centred_rms[0] * centred_rms[1] / np.sqrt(16)
    assert alpha == pytest.approx(
        1e-3 * ws.penalty_scale(_gram_problem(W, Z)) / 4, rel=1e-10)
    for c in range(5):
        residual = Z[:, c] - W @ on_model.kernels_[1][0][c] - on_model.block_intercepts_[1][c]
        ours = residual @ residual / (2 * len(Z)) + alpha * np.abs(on_model.kernels_[1][0][c]).sum()
        reference = _cvxpy_objective(W, Z[:, c], W.shape[1], 0.6, alpha)
        assert abs(ours - reference) <= 1e-6 * reference
    with pytest.raises(ValueError, match="state_inputs='model' needs a feed-forward"):
        SIMRegressor(baseline, state_inputs="model", lateral_kernel=3).fit(X, logits)


def _gram_problem(W, Z):
    accumulator = GramAccumulator(W.shape[1], Z.shape[1], True)
    accumulator.add(W, Z)
    return accumulator.finish()


def test_refitting_a_flat_model_drops_the_weight_shared_attributes(tiny_problem):
    _, baseline, X, logits = tiny_problem
    model = SIMRegressor(baseline, alpha=1e-2, output_target="y").fit(X, logits[:, 0])
    assert model.kernels_ and model.A_.shape[0] == model.n_states_
    model.set_params(weight_sharing=False).fit(X, logits[:, 0])
    for attribute in FITTED_ATTRIBUTES:
        if attribute.only == "weight_shared":
            assert not hasattr(model, attribute.name), attribute.name
    states, _ = baseline.record(X)
    assert model.A_.shape == (states.shape[1],) * 2
    expected = (model.equilibrium(X) @ model.C_.toarray().T + X @ model.D_.toarray().T
                + model.intercept_).ravel()
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12, atol=1e-12)


def test_skip_links_stay_feed_forward_and_exact():
    """skip_links: each spatial block also reads the nearest earlier blocks
    of equal or finer resolution through strided 3 x 3 kernels; the model
    stays feed-forward (one pass), equals its unrolled flat model, keeps
    ||A||_inf <= kappa exactly with the skip columns under the bound, and
    exports to torch."""
    from sksim import weight_sharing as ws

    torch.manual_seed(3)
    module = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 3)).double()
    X = np.random.default_rng(2).normal(size=(50, 2 * 7 * 7))
    baseline = TorchBaseline(module, input_shape=(2, 7, 7), dtype="float64")
    _, logits = baseline.record(X)
    kappa = 0.6
    model = SIMRegressor(baseline, alpha=1e-4, kappa=kappa, skip_links=2).fit(
        X, logits, baseline_outputs=logits)
    links = model.structure_.links
    assert {(link.source, link.stride) for link in links[1]} == {(0, 1)}
    assert {(link.source, link.stride) for link in links[2]} == {(1, 2), (0, 2)}
    assert all(link.source < b for b, block in enumerate(links) for link in block)
    _, _, n_iter = ws.block_equilibrium(model._shared_model, X[:5], tol=0.0, max_iter=50)
    assert n_iter == 1
    assert any(np.any(model.kernels_[2][i]) for i in range(2))  # the skip is used
    assert _exact_inf_norm(model.A_) <= kappa
    _assert_equals_unrolled(model, np.random.default_rng(4).normal(size=(20, X.shape[1])))
    with torch.no_grad():
        np.testing.assert_allclose(model.to_torch()(torch.as_tensor(X[:7])).numpy(),
                                   model.predict(X[:7]), atol=1e-10)
    plain = SIMRegressor(baseline, alpha=1e-4, kappa=kappa).fit(X, logits,
                                                              baseline_outputs=logits)
    assert [len(block) for block in plain.structure_.links] == [1, 1, 1]


@pytest.mark.parametrize("scaling", ["rms", "none"])
def test_weight_shared_fit_rejects_other_state_scaling(tiny_problem, scaling):
    _, baseline, X, logits = tiny_problem
    with pytest.raises(ValueError, match=f"state_scaling='{scaling}' applies to flat"):
        SIMRegressor(baseline, state_scaling=scaling).fit(X, logits)


def test_weight_shared_fit_reports_progress(tiny_problem, capsys):
    _, baseline, X, logits = tiny_problem
    quiet = SIMRegressor(baseline, alpha=1e-3).fit(X, logits)
    assert capsys.readouterr().out == ""
    loud = SIMRegressor(baseline, alpha=1e-3, verbose=1).fit(X, logits)
    out = capsys.readouterr().out
    n_blocks = len(loud.structure_.links)
    for line in ("blocks' Gram matrices", f"block {n_blocks} of {n_blocks}: ",
                 "output rows' Gram matrix", "output rows: "):
        assert line in out
    for mine, theirs in zip(loud.kernels_, quiet.kernels_):
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b)

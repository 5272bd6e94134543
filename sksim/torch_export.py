"""Export a fitted SIM model to a torch ``nn.Module``.

This module imports torch at the top: ``to_torch`` imports it lazily, so
``import sksim`` never needs torch. The module classes are defined here, at
module level, so exported modules pickle and ``torch.save`` like any other.

How the module computes the equilibrium ``x = relu(A x + B u + b_x)``:

* ``A`` strictly lower triangular (the ``"feedforward"`` structure, or any
  fit without feedback): one pass of block products, block ``b``'s states
  from the earlier blocks', like ``predict``; autograd differentiates it.
* otherwise, for float CPU tensors: sksim's Gauss-Seidel kernel (the one
  ``predict`` uses, run in float64 on the exact fitted ``A``), and on other
  devices Jacobi steps on the device; both stop at the residual tolerance.
  Gradients then come from implicit differentiation: for ``x* = f(x*, u)``
  the vector-Jacobian product through the equilibrium is
  ``g = v + (df/dx)^T g``, solved by fixed-point iteration; it converges
  because ``||(D A)^T||_1 = ||D A||_inf <= ||A||_inf < 1`` for the 0/1
  diagonal ``D`` of ReLU derivatives. No iterate is stored.

A weight-shared model exports as its blocks (:class:`SharedSIMModule`): each
link's pooling stages and ``conv2d`` / linear map on the kernels, each
block's activation (a clipped leaky ReLU), never the unrolled matrices (a
max-pooling model has none). A block with a lateral link (one reading the
block itself) iterates ``x_b <- phi(drive_b + K x_b)`` to the tolerance, as
``predict`` does, and its gradient comes from the same implicit
differentiation at the block's fixed point.

The modules behave as any ``nn.Module``: ``.to(dtype or device)``,
``.float()``, ``.double()``, ``state_dict`` / ``load_state_dict``, ``pickle``
and ``torch.save``. Their buffers are copies (never views of the estimator's
arrays, which ``load_state_dict`` would overwrite in place).
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from ._arrays import DENSE_PRODUCT_DENSITY
from .solvers import solve_equilibrium


def _to_torch_matrix(matrix, dtype, sparse):
    """A scipy sparse matrix as a torch tensor: sparse COO when ``sparse`` is
    True, dense when False, and when None sparse below the density from which
    products run faster dense."""
    if sparse is None:
        sparse = matrix.nnz < DENSE_PRODUCT_DENSITY * max(1, matrix.shape[0] * matrix.shape[1])
    if sparse:
        coo = matrix.tocoo()
        indices = torch.tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
        values = torch.tensor(coo.data, dtype=dtype)
        return torch.sparse_coo_tensor(indices, values, coo.shape,
                                       check_invariants=True).coalesce()
    return torch.tensor(matrix.toarray(), dtype=dtype)


def _copy(array, dtype):
    """A torch copy of ``array`` (``torch.as_tensor`` would share the
    estimator's memory, and ``load_state_dict`` copies into buffers in place)."""
    return torch.tensor(np.asarray(array), dtype=dtype)


def _to_csr_float64(tensor):
    """A dense or sparse COO torch matrix as a float64 scipy CSR array."""
    tensor = tensor.detach().to("cpu", torch.float64)
    if tensor.is_sparse:
        tensor = tensor.coalesce()
        rows, cols = tensor.indices().numpy()
        return sp.csr_array((tensor.values().numpy(), (rows, cols)),
                            shape=tuple(tensor.shape))
    return sp.csr_array(tensor.numpy())


def _right(matrix, x):
    """``x @ matrix.T`` for a dense or sparse ``matrix``."""
    if matrix.is_sparse:
        return torch.sparse.mm(matrix, x.T).T
    return x @ matrix.T


class _Stall:
    """True once the residual has not improved for ``patience`` iterations:
    the iteration (a contraction) has reached the rounding floor of its dtype,
    e.g. float32 with a float64-sized ``equilibrium_tol``."""

    def __init__(self, patience=20):
        self.best = float("inf")
        self.since_best = 0
        self.patience = patience

    def __call__(self, residual):
        if residual < self.best:
            self.best, self.since_best = residual, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience


def _implicit_step(step, x_fixed, drive, tol, max_iter):
    """``step(x_fixed, drive)`` (differentiable in ``drive``), its gradient
    corrected to that of the fixed point ``x* = step(x*, drive)``
    (implicit differentiation): the hook replaces the incoming gradient
    ``v`` by the solution ``g`` of the adjoint fixed point
    ``g = v + (d step / dx)^T g``, iterated to ``tol`` (or until it stalls
    at the dtype's rounding floor); a contraction, as the forward map is."""
    x = step(x_fixed.detach(), drive)
    x_star = x.detach().requires_grad_()
    f_star = step(x_star, drive.detach())

    def adjoint(grad):
        if grad is None:
            return None
        g = grad
        stall = _Stall()
        for _ in range(max_iter):
            (vjp,) = torch.autograd.grad(f_star, x_star, g, retain_graph=True)
            new = grad + vjp
            change = float((new - g).abs().max())
            done = change <= tol * max(1.0, float(new.abs().max()))
            g = new
            if done or stall(change):
                break
        return g

    x.register_hook(adjoint)
    return x


class SIMModule(nn.Module):
    """Equilibrium and outputs of a fitted SIM model on torch tensors.

    Built by ``SIMRegressor.to_torch`` / ``SIMClassifier.to_torch``.
    ``forward(u)`` takes inputs of shape (batch, n_features) and returns the
    outputs (batch, n_outputs); ``equilibrium(u)`` returns the hidden states
    (batch, n_states). Weights are buffers (sparse COO where the fitted
    matrix is very sparse); gradients flow to the inputs.

    Attributes
    ----------
    tol : float
        The fixed-point loops stop once the residual is at most
        ``tol * max(1, max|x|)``.
    max_iter : int
        Most Gauss-Seidel sweeps, Jacobi steps or adjoint steps per call.
    forward_blocks : list of (start, stop) or None
        The blocks of a one-pass equilibrium (``A`` strictly block lower
        triangular), else None.
    """

    def __init__(self, estimator, *, dtype, sparse, tol, max_iter, forward_blocks):
        super().__init__()
        for name in ("A", "B", "C", "D"):
            self.register_buffer(name, _to_torch_matrix(getattr(estimator, name + "_"),
                                                        dtype, sparse))
        self.register_buffer("state_intercept", _copy(estimator.state_intercept_, dtype))
        self.register_buffer("output_intercept", _copy(estimator.intercept_, dtype))
        # the exact float64 A for the CPU Gauss-Seidel kernel (a buffer's
        # copy may be float32, and stays rounded after .double()); not a
        # buffer, so .float() leaves it exact; load_state_dict refreshes it
        self._A_float64 = sp.csr_array(estimator.A_, dtype=np.float64, copy=True)
        self.forward_blocks = forward_blocks
        if forward_blocks is not None:
            for b, (start, stop) in enumerate(forward_blocks[1:]):
                self.register_buffer(f"A_block_{b}", _to_torch_matrix(
                    estimator.A_.tocsr()[start:stop, :start], dtype, sparse))
        self.tol = tol
        self.max_iter = max_iter

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # Keep the Gauss-Seidel kernel's float64 A consistent with the loaded
        # buffer A: kept when the buffer is its rounding (a state_dict of this
        # model, in any dtype), else replaced by the buffer's values.
        if prefix + "A" not in state_dict:
            return
        loaded = _to_csr_float64(self.A)
        exact = self._A_float64
        rounded = sp.csr_array((torch.tensor(exact.data).to(self.A.dtype).double().numpy(),
                                exact.indices, exact.indptr), shape=exact.shape)
        if loaded.shape != exact.shape or (loaded != rounded).nnz:
            self._A_float64 = loaded

    def _step(self, x, drive):
        return torch.relu(_right(self.A, x) + drive)

    def _one_pass(self, drive):
        """Block ``b``'s states ``relu(drive_b + A[b, :start_b] x[:start_b])``."""
        (_, first_stop), *rest = self.forward_blocks
        states = torch.relu(drive[:, :first_stop])
        for b, (start, stop) in enumerate(rest):
            pre = drive[:, start:stop] + _right(getattr(self, f"A_block_{b}"), states)
            states = torch.cat([states, torch.relu(pre)], dim=1)
        return states

    def _gauss_seidel(self, drive):
        """sksim's Gauss-Seidel kernel on a CPU ``drive`` (in float64)."""
        solution = solve_equilibrium(self._A_float64,
                                     drive.detach().to(torch.float64).numpy(),
                                     tol=self.tol, max_iter=self.max_iter)
        scale = np.maximum(1.0, np.abs(solution.states).max(axis=1, initial=0.0))
        missed = solution.residual > self.tol * scale
        if np.any(missed):
            warnings.warn(
                f"The equilibrium did not reach tol={self.tol:g} for {missed.sum()} of "
                f"{len(missed)} samples within max_iter={self.max_iter} sweeps (largest "
                f"residual {solution.residual.max():.3e}); pass a larger max_iter to "
                "to_torch.", ConvergenceWarning)
        return torch.as_tensor(solution.states).to(drive.dtype)

    def _jacobi(self, drive):
        x = torch.zeros_like(drive)
        stall = _Stall()
        for _ in range(self.max_iter):
            new = self._step(x, drive)
            residual = float((new - x).abs().max())
            x = new
            if residual <= self.tol * max(1.0, float(x.abs().max())) or stall(residual):
                break
        return x

    def equilibrium(self, u):
        u = u.to(self.state_intercept.dtype)
        drive = _right(self.B, u) + self.state_intercept
        if self.forward_blocks is not None:
            return self._one_pass(drive)
        with torch.no_grad():
            x = self._gauss_seidel(drive) if drive.device.type == "cpu" else self._jacobi(drive)
        if not (torch.is_grad_enabled() and drive.requires_grad):
            return x
        return _implicit_step(self._step, x, drive, self.tol, self.max_iter)

    def forward(self, u):
        u = u.to(self.state_intercept.dtype)
        x = self.equilibrium(u)
        return _right(self.C, x) + _right(self.D, u) + self.output_intercept


def build_torch_module(estimator, *, dtype=None, sparse=None, tol=None, max_iter=None,
                       forward_blocks=None):
    """Build the torch module of a fitted SIM estimator (see ``to_torch``)."""
    return SIMModule(
        estimator, dtype=torch.float64 if dtype is None else dtype, sparse=sparse,
        tol=estimator.equilibrium_tol if tol is None else tol,
        max_iter=10 * estimator.equilibrium_max_iter if max_iter is None else max_iter,
        forward_blocks=forward_blocks)


def _pool(stage, images):
    """One pooling stage (:class:`sksim.blocks.Pool`) of images (n, C, H, W)."""
    if stage.kind == "avg":
        return nn.functional.avg_pool2d(images, stage.size, stage.stride, stage.padding,
                                        count_include_pad=True)
    return nn.functional.max_pool2d(images, stage.size, stage.stride, stage.padding)


class SharedSIMModule(nn.Module):
    """Blocks of a weight-shared SIM model on torch tensors: each link's
    pooling stages and its kernel as a ``conv2d`` / linear layer (no
    unrolling), so it runs at the speed of a CNN, and each block's
    activation. ``forward(u)`` (batch, n_outputs), ``equilibrium(u)``
    (batch, n_states).

    Blocks are computed in order, as ``predict`` does. A block without a
    lateral link is one pass, differentiated by autograd. A block with
    lateral links (links reading the block itself) iterates
    ``x_b <- phi(drive_b + K x_b)`` (a contraction) without autograd until
    the change is at most ``tol * max(1, max|x_b|)`` for every sample, or
    stops decreasing (the dtype's rounding floor), or ``max_iter`` passes;
    then one differentiable pass at that point carries the gradient, which a
    hook corrects to the fixed point's (implicit differentiation: an adjoint
    fixed point, no iterate stored).

    Attributes
    ----------
    structure : sksim.blocks.Structure
    tol : float
    max_iter : int
    """

    def __init__(self, estimator, *, dtype, tol, max_iter):
        super().__init__()
        model = estimator._shared_model
        self.structure = model.structure
        for b, (links, kernels) in enumerate(zip(self.structure.links, model.kernels)):
            for i, (link, kernel) in enumerate(zip(links, kernels)):
                self.register_buffer(f"kernel_{b}_{i}", self._weight(link, kernel, dtype))
            self.register_buffer(f"intercept_{b}", _copy(model.intercepts[b], dtype))
        for i, (link, kernel) in enumerate(zip(self.structure.head, model.head_kernels)):
            self.register_buffer(f"output_kernel_{i}", self._weight(link, kernel, dtype))
        self.register_buffer("output_intercept", _copy(model.head_intercept, dtype))
        self.tol = tol
        self.max_iter = max_iter

    def _weight(self, link, kernel, dtype):
        tensor = _copy(kernel, dtype)
        if link.kind == "conv":
            channels = self.structure.link_source_shape(link)[0]
            tensor = tensor.reshape(kernel.shape[0], channels, link.kernel_size,
                                    link.kernel_size)
        return tensor

    @staticmethod
    def _link_forward(link, kernel, source):
        """``link``'s pools, then its map with ``kernel``, of ``source``."""
        for stage in link.pool:
            source = _pool(stage, source)
        if link.kind == "conv":
            return nn.functional.conv2d(source, kernel, stride=link.stride,
                                        padding=link.padding)
        if link.kind == "pool":
            return source.mean(dim=(2, 3)) @ kernel.T
        return source.flatten(1) @ kernel.T

    def _sum(self, links, prefix, sources, total):
        """``total`` plus the outputs of ``links`` (of ``prefix_i``)."""
        for i, link in links:
            total = total + self._link_forward(link, getattr(self, f"{prefix}_{i}"),
                                               sources[link.source])
        return total

    @staticmethod
    def _shaped(intercept, shape):
        return intercept.reshape((-1, 1, 1) if len(shape) == 3 else (-1,))

    def _lateral_fixed_point(self, b, drive, step):
        """The fixed point of ``step`` from ``phi(drive)``, without autograd."""
        with torch.no_grad():
            states = self.structure.activation(b).on_tensor(drive)
            change = torch.full((1,), float("inf"))
            stall = _Stall()
            for _ in range(self.max_iter):
                update = step(states, drive)
                change = (update - states).abs().flatten(1).amax(dim=1)
                scale = update.abs().flatten(1).amax(dim=1).clamp(min=1.0)
                states = update
                if bool((change <= self.tol * scale).all()):
                    return states
                if stall(float(change.max())):
                    return states
        warnings.warn(
            f"The equilibrium of block {b} did not reach tol={self.tol:g} within "
            f"max_iter={self.max_iter} passes (largest change {float(change.max()):.3e}); "
            "pass a larger max_iter to to_torch.", ConvergenceWarning)
        return states

    def _blocks(self, u):
        u = u.to(self.output_intercept.dtype)
        sources = {-1: u.reshape((u.shape[0],) + tuple(self.structure.input_shape))}
        for b, (shape, links) in enumerate(zip(self.structure.block_shapes,
                                               self.structure.links)):
            prefix = f"kernel_{b}"
            lateral = [(i, link) for i, link in enumerate(links) if link.source == b]
            drive = self._sum([(i, link) for i, link in enumerate(links)
                               if link.source != b], prefix, sources,
                              self._shaped(getattr(self, f"intercept_{b}"), shape))
            activation = self.structure.activation(b)
            if not lateral:
                sources[b] = activation.on_tensor(drive)
                continue

            def step(states, drive, b=b, lateral=lateral, prefix=prefix,
                     activation=activation):
                return activation.on_tensor(self._sum(lateral, prefix, {b: states}, drive))

            states = self._lateral_fixed_point(b, drive, step)
            if torch.is_grad_enabled() and drive.requires_grad:
                states = _implicit_step(step, states, drive, self.tol, self.max_iter)
            sources[b] = states
        return sources

    def equilibrium(self, u):
        sources = self._blocks(u)
        return torch.cat([sources[b].flatten(1)
                          for b in range(len(self.structure.links))], dim=1)

    def forward(self, u):
        sources = self._blocks(u)
        return self._sum(enumerate(self.structure.head), "output_kernel", sources,
                         self.output_intercept)


def build_shared_torch_module(estimator, *, dtype=None, tol=None, max_iter=None):
    """Torch module of a weight-shared model (see ``to_torch``)."""
    return SharedSIMModule(
        estimator, dtype=torch.float64 if dtype is None else dtype,
        tol=estimator.equilibrium_tol if tol is None else tol,
        max_iter=10 * estimator.equilibrium_max_iter if max_iter is None else max_iter)

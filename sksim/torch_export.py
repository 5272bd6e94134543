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
"""

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from .estimators import DENSE_PRODUCT_DENSITY
from .solvers import solve_equilibrium


def _to_torch_matrix(matrix, dtype, sparse):
    """A scipy sparse matrix as a torch tensor: sparse COO when ``sparse`` is
    True, dense when False, and when None sparse below the density from which
    products run faster dense."""
    if sparse is None:
        sparse = matrix.nnz < DENSE_PRODUCT_DENSITY * max(1, matrix.shape[0] * matrix.shape[1])
    if sparse:
        coo = matrix.tocoo()
        indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
        values = torch.as_tensor(coo.data, dtype=dtype)
        return torch.sparse_coo_tensor(indices, values, coo.shape,
                                       check_invariants=True).coalesce()
    return torch.as_tensor(matrix.toarray(), dtype=dtype)


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
        self.register_buffer("state_intercept", torch.as_tensor(
            estimator.state_intercept_, dtype=dtype))
        self.register_buffer("output_intercept", torch.as_tensor(
            estimator.intercept_, dtype=dtype))
        # the exact float64 A for the CPU Gauss-Seidel kernel (a buffer's
        # copy may be float32)
        self._A_float64 = estimator.A_.tocsr()
        self.forward_blocks = forward_blocks
        if forward_blocks is not None:
            for b, (start, stop) in enumerate(forward_blocks[1:]):
                self.register_buffer(f"A_block_{b}", _to_torch_matrix(
                    estimator.A_.tocsr()[start:stop, :start], dtype, sparse))
        self.tol = tol
        self.max_iter = max_iter

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
        # One differentiable step at the fixed point, then correct its
        # gradient with the adjoint fixed point (implicit differentiation).
        x = self._step(x.detach(), drive)
        x_star = x.detach().requires_grad_()
        f_star = self._step(x_star, drive.detach())
        tol, max_iter = self.tol, self.max_iter

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


class SharedSIMModule(nn.Module):
    """Blocks of a feed-forward weight-shared SIM model on torch tensors: its
    kernels as ``conv2d`` / linear layers (no unrolling), so it runs at the
    speed of a CNN; autograd differentiates it directly. ``forward(u)``
    (batch, n_outputs), ``equilibrium(u)`` (batch, n_states)."""

    def __init__(self, estimator, *, dtype):
        super().__init__()
        model = estimator._shared_model
        self.structure = model.structure
        for b, (links, kernels) in enumerate(zip(self.structure.links, model.kernels)):
            for i, (link, kernel) in enumerate(zip(links, kernels)):
                self.register_buffer(f"kernel_{b}_{i}", self._weight(link, kernel, dtype))
            self.register_buffer(f"intercept_{b}", torch.as_tensor(
                model.intercepts[b], dtype=dtype))
        for i, (link, kernel) in enumerate(zip(self.structure.head, model.head_kernels)):
            self.register_buffer(f"output_kernel_{i}", self._weight(link, kernel, dtype))
        self.register_buffer("output_intercept", torch.as_tensor(
            model.head_intercept, dtype=dtype))

    def _weight(self, link, kernel, dtype):
        tensor = torch.as_tensor(kernel, dtype=dtype)
        if link.kind == "conv":
            channels = self.structure.source_shape(link.source)[0]
            tensor = tensor.reshape(kernel.shape[0], channels, link.kernel_size,
                                    link.kernel_size)
        return tensor

    @staticmethod
    def _apply(link, kernel, source):
        if link.kind == "conv":
            return nn.functional.conv2d(source, kernel, stride=link.stride,
                                        padding=link.padding)
        if link.kind == "pool":
            return source.mean(dim=(2, 3)) @ kernel.T
        return source.flatten(1) @ kernel.T

    def _sum(self, links, prefix, sources, intercept):
        total = intercept.reshape((-1, 1, 1) if links[0].kind == "conv" else (-1,))
        for i, link in enumerate(links):
            total = total + self._apply(link, getattr(self, f"{prefix}_{i}"),
                                        sources[link.source])
        return total

    def _blocks(self, u):
        u = u.to(self.output_intercept.dtype)
        sources = {-1: u.reshape((u.shape[0],) + tuple(self.structure.input_shape))}
        for b, links in enumerate(self.structure.links):
            sources[b] = torch.relu(self._sum(links, f"kernel_{b}", sources,
                                              getattr(self, f"intercept_{b}")))
        return sources

    def equilibrium(self, u):
        sources = self._blocks(u)
        return torch.cat([sources[b].flatten(1)
                          for b in range(len(self.structure.links))], dim=1)

    def forward(self, u):
        sources = self._blocks(u)
        return self._sum(self.structure.head, "output_kernel", sources,
                         self.output_intercept)


def build_shared_torch_module(estimator, *, dtype=None):
    """Torch module of a feed-forward weight-shared model (see ``to_torch``)."""
    return SharedSIMModule(estimator, dtype=torch.float64 if dtype is None else dtype)

"""Export a fitted SIM model to a torch ``nn.Module`` (torch imported lazily).

The module solves the equilibrium ``x = relu(A x + B u + b_x)`` without
recording a graph, then attaches the gradient by implicit differentiation:
for ``x* = f(x*, u)`` the vector-Jacobian product through the equilibrium is
``g = v + (df/dx)^T g``, solved by fixed-point iteration; it converges because
``||(D A)^T||_1 = ||D A||_inf <= ||A||_inf < 1`` for the 0/1 diagonal ``D`` of
ReLU derivatives. No iterate is stored.
"""

import numpy as np


def _to_torch_matrix(torch, matrix, dtype, sparse):
    if sparse:
        coo = matrix.tocoo()
        indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
        values = torch.as_tensor(coo.data, dtype=dtype)
        return torch.sparse_coo_tensor(indices, values, coo.shape,
                                   check_invariants=True).coalesce()
    return torch.as_tensor(matrix.toarray(), dtype=dtype)


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


def build_torch_module(estimator, *, dtype=None, sparse=None, tol=None, max_iter=None):
    """Build the torch module of a fitted SIM estimator (see ``to_torch``)."""
    import torch
    from torch import nn

    dtype = torch.float64 if dtype is None else dtype
    tol = estimator.equilibrium_tol if tol is None else tol
    max_iter = 10 * estimator.equilibrium_max_iter if max_iter is None else max_iter

    def density(m):
        return m.nnz / max(1, m.shape[0] * m.shape[1])

    class SIMModule(nn.Module):
        """Equilibrium and outputs of a fitted SIM model on torch tensors.

        ``forward(u)`` takes inputs of shape (batch, n_features) and returns
        the outputs (batch, n_outputs); ``equilibrium(u)`` returns the hidden
        states (batch, n_states). Weights are buffers (sparse COO where the
        fitted matrix is sparse); gradients flow to the inputs.
        """

        def __init__(self):
            super().__init__()
            for name in ("A_", "B_", "C_", "D_"):
                matrix = getattr(estimator, name)
                use_sparse = density(matrix) < 0.5 if sparse is None else sparse
                self.register_buffer(name.rstrip("_"), _to_torch_matrix(
                    torch, matrix, dtype, use_sparse))
            self.register_buffer("state_intercept", torch.as_tensor(
                estimator.state_intercept_, dtype=dtype))
            self.register_buffer("output_intercept", torch.as_tensor(
                estimator.intercept_, dtype=dtype))
            self.tol = tol
            self.max_iter = max_iter

        @staticmethod
        def _right(matrix, x):
            """``x @ matrix.T`` for a dense or sparse ``matrix``."""
            if matrix.is_sparse:
                return torch.sparse.mm(matrix, x.T).T
            return x @ matrix.T

        def _step(self, x, drive):
            return torch.relu(self._right(self.A, x) + drive)

        def equilibrium(self, u):
            u = u.to(self.state_intercept.dtype)
            drive = self._right(self.B, u) + self.state_intercept
            with torch.no_grad():
                x = torch.zeros_like(drive)
                stall = _Stall()
                for _ in range(self.max_iter):
                    new = self._step(x, drive)
                    residual = float((new - x).abs().max())
                    x = new
                    if (residual <= self.tol * max(1.0, float(x.abs().max()))
                            or stall(residual)):
                        break
            if not (torch.is_grad_enabled() and (u.requires_grad or drive.requires_grad)):
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

            if x.requires_grad:
                x.register_hook(adjoint)
            return x

        def forward(self, u):
            u = u.to(self.state_intercept.dtype)
            x = self.equilibrium(u)
            return (self._right(self.C, x) + self._right(self.D, u)
                    + self.output_intercept)

    return SIMModule()


def build_shared_torch_module(estimator, *, dtype=None):
    """Torch module of a feed-forward weight-shared model: its blocks as
    ``conv2d`` / linear layers with the fitted kernels (no unrolling), so it
    runs at the speed of a CNN; autograd differentiates it directly."""
    import torch
    from torch import nn

    model = estimator._shared_model
    structure = model.structure
    dtype = torch.float64 if dtype is None else dtype

    def weight(link, kernel):
        tensor = torch.as_tensor(kernel, dtype=dtype)
        if link.kind == "conv":
            channels = structure.source_shape(link.source)[0]
            tensor = tensor.reshape(kernel.shape[0], channels, link.kernel_size,
                                    link.kernel_size)
        return tensor

    class SharedSIMModule(nn.Module):
        """Blocks of a weight-shared SIM model on torch tensors: ``forward(u)``
        (batch, n_outputs), ``equilibrium(u)`` (batch, n_states)."""

        def __init__(self):
            super().__init__()
            for b, (links, kernels) in enumerate(zip(structure.links, model.kernels)):
                for i, (link, kernel) in enumerate(zip(links, kernels)):
                    self.register_buffer(f"kernel_{b}_{i}", weight(link, kernel))
                self.register_buffer(f"intercept_{b}", torch.as_tensor(
                    model.intercepts[b], dtype=dtype))
            for i, (link, kernel) in enumerate(zip(structure.head, model.head_kernels)):
                self.register_buffer(f"output_kernel_{i}", weight(link, kernel))
            self.register_buffer("output_intercept", torch.as_tensor(
                model.head_intercept, dtype=dtype))

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
            sources = {-1: u.reshape((u.shape[0],) + tuple(structure.input_shape))}
            for b, links in enumerate(structure.links):
                sources[b] = torch.relu(self._sum(links, f"kernel_{b}", sources,
                                                  getattr(self, f"intercept_{b}")))
            return sources

        def equilibrium(self, u):
            sources = self._blocks(u)
            return torch.cat([sources[b].flatten(1)
                              for b in range(len(structure.links))], dim=1)

        def forward(self, u):
            sources = self._blocks(u)
            return self._sum(structure.head, "output_kernel", sources,
                             self.output_intercept)

    return SharedSIMModule()

"""The reduce stage on a torch device: a weight-shared fit's per-block Gram
problems accumulated where the teacher runs (e.g. a GPU), in float64.

The same sums as :mod:`sksim.design` builds on the host (the patch Gram of
a block is a GEMM of its unfolded sources): each batch's design and targets
are built as tensors on the device (``torch.nn.functional.unfold`` for the
convolution windows, the torch pools of :mod:`sksim.blocks`), centred on
their own mean and merged into the running sums by the same pairwise update;
only the finished sums come back to the host, as a
:class:`~sksim.design.GramAccumulator`. The teacher's recorded batches
arrive as host arrays (one copy per state, not per patch entry, crosses to
the device). torch is imported by the caller: this path is taken only for a
:class:`~sksim.TorchBaseline` teacher.
"""

import numpy as np

from .blocks import INPUT, _torch_pool_once, link_width
from .design import GramAccumulator


class DeviceGramAccumulator:
    """:class:`~sksim.design.GramAccumulator` of float64 tensors on ``device``.

    Parameters
    ----------
    torch : module
    device : torch.device
    n_columns, n_targets : int
    fit_intercept : bool
    """

    def __init__(self, torch, device, n_columns, n_targets, fit_intercept):
        self.torch, self.fit_intercept = torch, fit_intercept
        self.count = 0
        self.design_mean = torch.zeros(n_columns, dtype=torch.float64, device=device)
        self.target_mean = torch.zeros(n_targets, dtype=torch.float64, device=device)
        self.scatter = self.cross = self.target_sq = None

    def add(self, design, targets, *, overwrite=False):
        """Add rows: float64 tensors ``design`` (n, n_columns) and ``targets``
        (n, n_targets); with ``overwrite`` ``design`` is centred in place."""
        n = design.shape[0]
        if n == 0:
            return
        design_mean, target_mean = self.design_mean * 0, self.target_mean * 0
        if self.fit_intercept:
            design_mean, target_mean = design.mean(dim=0), targets.mean(dim=0)
            design = design.sub_(design_mean) if overwrite else design - design_mean
            targets = targets - target_mean
        scatter, cross = design.T @ design, targets.T @ design
        target_sq = (targets * targets).sum(dim=0)
        if self.count == 0:
            self.scatter, self.cross, self.target_sq = scatter, cross, target_sq
            self.design_mean, self.target_mean, self.count = design_mean, target_mean, n
            return
        total = self.count + n
        weight = self.count * n / total
        delta_design = design_mean - self.design_mean
        delta_target = target_mean - self.target_mean
        self.scatter += scatter
        self.scatter.addr_(delta_design, delta_design, alpha=weight)
        self.cross += cross
        self.cross.addr_(delta_target, delta_design, alpha=weight)
        self.target_sq += target_sq + weight * delta_target**2
        self.design_mean += delta_design * (n / total)
        self.target_mean += delta_target * (n / total)
        self.count = total

    def to_host(self):
        """The sums as a host :class:`~sksim.design.GramAccumulator` (merged
        and finished as the host path's)."""
        host = GramAccumulator(self.design_mean.numel(), self.target_mean.numel(),
                               self.fit_intercept)
        host.count = self.count
        host.design_mean = self.design_mean.cpu().numpy()
        host.target_mean = self.target_mean.cpu().numpy()
        if self.count:
            host.scatter, host.cross, host.target_sq = (
                a.cpu().numpy() for a in (self.scatter, self.cross, self.target_sq))
        return host


class DeviceDesigns:
    """Blocks' design rows and targets as float64 tensors on ``device``: the
    device counterpart of the host designs of
    :func:`sksim.weight_sharing.accumulate_block_problems`."""

    def __init__(self, torch, device):
        self.torch, self.device = torch, device

    def tensor(self, array):
        return self.torch.as_tensor(np.asarray(array), dtype=self.torch.float64,
                                    device=self.device)

    def scaled(self, pre_activations, scale):
        return self.tensor(pre_activations) * float(scale)

    def activated(self, activation, pre_activations):
        return activation.on_tensor(pre_activations)

    def accumulator(self, n_columns, n_targets, fit_intercept):
        return DeviceGramAccumulator(self.torch, self.device, n_columns, n_targets,
                                     fit_intercept)

    def to_host(self, accumulator):
        return accumulator.to_host()

    def accumulate(self, accumulator, structure, index, X, post_activations, targets,
                   positions):
        """Add block ``index``'s rows of the samples ``X`` (as
        :meth:`sksim.weight_sharing.HostDesigns.accumulate`)."""
        accumulator.add(self.rows(structure, index, X, post_activations, positions),
                        self.targets(structure.block_shapes[index], targets, positions),
                        overwrite=True)

    def rows(self, structure, index, X, post_activations, positions):
        """Design rows of block ``index`` (its links' patches side by side)."""
        return self.torch.cat([self._patches(structure, link, X if link.source == INPUT
                                             else post_activations[link.source], positions)
                               for link in structure.links[index]], dim=1)

    def targets(self, shape, values, positions):
        """Per-position targets (n * k, channels) of a block's flat values."""
        if len(shape) != 3:
            return values
        per_position = values.reshape(values.shape[0], shape[0], -1).transpose(1, 2)
        return self._kept(per_position, positions).reshape(-1, shape[0])

    def _patches(self, structure, link, source_values, positions):
        n = source_values.shape[0]
        images = source_values.reshape(n, *structure.source_shape(link.source))
        for stage in link.pool:
            images = _torch_pool_once(self.torch, images, stage)
        if link.kind == "dense":
            return images.reshape(n, -1)
        if link.kind == "pool":
            return images.mean(dim=(2, 3))
        windows = self.torch.nn.functional.unfold(
            images, link.kernel_size, padding=link.padding, stride=link.stride)
        # (n, channel x row x column, positions): the kernel's column order
        windows = self._kept(windows.transpose(1, 2), positions)
        return windows.reshape(-1, link_width(structure, link))

    def _kept(self, per_position, positions):
        if positions is None:
            return per_position
        rows = self.torch.arange(per_position.shape[0], device=self.device)[:, None]
        return per_position[rows, self.torch.as_tensor(positions, device=self.device)]

"""What a flat fit reads off its teacher: one function per kind of teacher.

Each returns a :class:`TeacherRecord` (the states and outputs on the given
samples, the scales that make the teacher well posed, its blocks), so the
in-memory fit and the streamed one (which records only a few rows, to learn
the teacher's widths, and runs ``chunk_teacher`` on each chunk) read a
teacher the same way. The weight-shared fit reads its teacher's layers
instead (:mod:`sksim.weight_sharing`).
"""

from typing import NamedTuple

import numpy as np

from . import weight_sharing as shared
from .baselines import mlp_forward, well_posed_layer_scales


class TeacherRecord(NamedTuple):
    """A flat teacher on some samples.

    Attributes
    ----------
    states : ndarray of shape (n_samples, n_states)
        Pre-activations as recorded (not scaled).
    outputs : ndarray of shape (n_samples, n_outputs) or None
        Raw outputs (logits for a classifier); None for precomputed states.
    well_posed_scales : ndarray of shape (n_states,) or None
        Per-state scales under which the teacher itself is well posed; None
        for precomputed states, when not asked for, or for a torch module that
        is not a chain of affine layers.
    blocks : list of int or None
        States per block (layer) in forward order; None for precomputed states.
    chunk_teacher : None, ("mlp", coefs, intercepts) or TorchBaseline
        What :func:`sksim.streaming.chunk_states` runs on a chunk (None: it
        reads the chunk of precomputed states).
    """

    states: np.ndarray
    outputs: object
    well_posed_scales: object
    blocks: object
    chunk_teacher: object


def record_states(states):
    """Precomputed states: no teacher, nothing to scale."""
    return TeacherRecord(states, None, None, None, None)


def record_mlp(mlp, X, kappa):
    """A fitted scikit-learn MLP on X; its layers are the blocks."""
    blocks = [coef.shape[1] for coef in mlp.coefs_[:-1]]
    states, outputs = mlp_forward(mlp.coefs_, mlp.intercepts_, X)
    scales = np.repeat(well_posed_layer_scales(mlp.coefs_, kappa), blocks)
    return TeacherRecord(states, outputs, scales, blocks,
                         ("mlp", mlp.coefs_, mlp.intercepts_))


def record_torch(teacher, X, kappa=None):
    """A TorchBaseline on X; its activations are the blocks. The well-posed
    scales need the teacher traced (a pass over X), so they are computed
    only for a ``kappa``."""
    states, outputs = teacher.record(X)
    batches = teacher.iter_batches(X[:1])
    blocks = [block.shape[1] for block in next(batches)[1]]
    batches.close()
    scales = None if kappa is None else _torch_well_posed_scales(teacher, X, kappa,
                                                                 states.shape[1])
    return TeacherRecord(states, outputs, scales, blocks, teacher)


def _torch_well_posed_scales(teacher, X, kappa, n_states):
    """Per-state scales that make a torch teacher itself well posed, as for
    a scikit-learn MLP: block ``b`` reading block ``b - 1`` through a kernel
    of largest row L1 norm ``r`` is scaled by ``min(1, kappa / r)`` relative
    to it (ReLU is positively homogeneous, so the teacher's outputs do not
    change). The kernels are read off the traced teacher (Linear and Conv2d
    between ReLUs, BatchNorm folded); a teacher that is not such a chain
    (skip connections, unknown modules) keeps its states as recorded (None)."""
    from .baselines.torch_graph import GraphError

    try:
        maps = teacher.trace(X)
    except GraphError:
        return None
    sizes = maps.structure.block_sizes()
    if sum(sizes) != n_states:  # pragma: no cover - trace and record disagree
        return None
    return np.repeat(shared.block_scales(maps.structure, maps.kernels, kappa), sizes)

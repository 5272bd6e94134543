"""States of a fitted scikit-learn MLP (``MLPClassifier`` / ``MLPRegressor``).

A ReLU MLP with hidden layers ``h_1 .. h_L`` is an implicit model whose states are
the hidden units stacked layer by layer: ``A`` is strictly block lower triangular
and holds the hidden-to-hidden weights, ``B`` the first layer, ``C`` the last.
"""

import numpy as np


def well_posed_layer_scales(coefs, kappa):
    """Positive per-layer state scales that make the teacher itself well posed.

    Scaling layer ``l``'s states by ``s_l`` (ReLU is positively homogeneous)
    multiplies the block of ``A`` from layer ``l`` to ``l + 1`` by
    ``s_{l+1} / s_l``. Starting from ``s_1 = 1``, each ratio is chosen as
    ``min(1, kappa / ||W_l^T||_inf)``, so every row of the teacher's own ``A``
    has L1 norm at most ``kappa`` and layers that already satisfy the bound are
    left as they are.

    Parameters
    ----------
    coefs : list of ndarray
        ``MLP.coefs_``: ``coefs[l]`` has shape (fan_in, fan_out).
    kappa : float
        Target bound on the row L1 norms of the teacher's ``A``.

    Returns
    -------
    scales : list of float, one per hidden layer
    """
    n_hidden = len(coefs) - 1
    scales = [1.0]
    for layer in range(1, n_hidden):
        row_norm = np.abs(coefs[layer]).sum(axis=0).max()
        ratio = 1.0 if row_norm <= kappa else kappa / row_norm
        scales.append(scales[-1] * ratio)
    return scales


def mlp_forward(coefs, intercepts, inputs, scales=None):
    """Pre-activations of every hidden layer and the raw outputs of an MLP.

    Parameters
    ----------
    coefs, intercepts : list of ndarray
        ``MLP.coefs_`` and ``MLP.intercepts_``.
    inputs : ndarray of shape (n_samples, n_features)
    scales : list of float, default=None
        Per-hidden-layer state scales (see :func:`well_posed_layer_scales`);
        the outputs do not depend on them.

    Returns
    -------
    pre_activations : ndarray of shape (n_samples, sum(hidden_layer_sizes))
        Hidden pre-activations (scaled), concatenated in forward order.
    outputs : ndarray of shape (n_samples, n_outputs)
        Raw outputs (logits for a classifier), before any output activation.
    """
    n_hidden = len(coefs) - 1
    if scales is None:
        scales = [1.0] * n_hidden
    blocks = []
    activations = np.asarray(inputs, dtype=np.float64)
    for layer in range(n_hidden):
        pre = activations @ coefs[layer] + intercepts[layer]
        blocks.append(scales[layer] * pre)
        activations = np.maximum(pre, 0.0)
    outputs = activations @ coefs[-1] + intercepts[-1]
    return np.hstack(blocks), outputs


def mlp_implicit_blocks(coefs, intercepts, scales=None):
    """The teacher itself written as an implicit model (dense blocks).

    Returns ``(A, B, C, D, state_intercept, output_intercept)`` for the states
    returned by :func:`mlp_forward` with the same ``scales``.
    """
    n_hidden = len(coefs) - 1
    if scales is None:
        scales = [1.0] * n_hidden
    sizes = [c.shape[1] for c in coefs[:-1]]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n_states, n_features = offsets[-1], coefs[0].shape[0]
    n_outputs = coefs[-1].shape[1]
    A = np.zeros((n_states, n_states))
    B = np.zeros((n_states, n_features))
    C = np.zeros((n_outputs, n_states))
    D = np.zeros((n_outputs, n_features))
    state_intercept = np.zeros(n_states)
    B[: sizes[0]] = scales[0] * coefs[0].T
    state_intercept[: sizes[0]] = scales[0] * intercepts[0]
    for layer in range(1, n_hidden):
        rows = slice(offsets[layer], offsets[layer + 1])
        cols = slice(offsets[layer - 1], offsets[layer])
        A[rows, cols] = (scales[layer] / scales[layer - 1]) * coefs[layer].T
        state_intercept[rows] = scales[layer] * intercepts[layer]
    C[:, offsets[-2]:] = coefs[-1].T / scales[-1]
    return A, B, C, D, state_intercept, np.asarray(intercepts[-1], dtype=np.float64)

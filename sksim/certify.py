"""Certified predictions by interval bound propagation (IBP).

For an input box ``lower <= u <= upper`` (an l_inf ball of radius ``eps``
around a sample, optionally clipped to the valid input range), the
equilibrium states of ``x = relu(A x + B u + b)`` lie in a box
``[x_low, x_high]`` computed by interval arithmetic (:func:`interval_states`),
and the outputs ``y = C x + D u + d`` then have certified lower bounds of the
margins ``y_c - y_j`` between the predicted class ``c`` and every other
class. A prediction is *certified* when every such margin is provably
positive: no input in the box changes the label.

The same code certifies a plain ReLU MLP given by its weight matrices
(:func:`mlp_interval_states`, :func:`certified_mlp_predictions`; scikit-learn's
``coefs_`` / ``intercepts_`` convention), which on a feed-forward network is
the standard IBP of Gowal et al. (2018): a teacher network and the SIM model
distilled from it are certified by one computation.

The bounds are computed in float64 without directed rounding; they are exact
interval arithmetic up to the rounding of the products (relative errors of
order 1e-16 of the bounds' magnitudes).
"""

import warnings
from numbers import Real

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from .inspection import infinity_norm
from .solvers.equilibrium import forward_blocks, times_transpose

__all__ = [
    "certified_accuracy",
    "certified_mlp_accuracy",
    "certified_mlp_predictions",
    "certified_predictions",
    "input_box",
    "interval_states",
    "mlp_interval_states",
]


# ------------------------------------------------------------------ helpers
def _csr(matrix, name):
    if sp.issparse(matrix):
        matrix = sp.csr_array(matrix, dtype=np.float64)
    else:
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix; got shape {matrix.shape}.")
        matrix = sp.csr_array(matrix)
    if not np.all(np.isfinite(matrix.data)):
        raise ValueError(f"{name} has non-finite entries.")
    return matrix


def _split_signs(matrix):
    """``(M+, M-)`` = ``(max(M, 0), min(M, 0))`` of a CSR array, as CSR arrays."""
    positive, negative = matrix.copy(), matrix.copy()
    positive.data = np.maximum(positive.data, 0.0)
    negative.data = np.minimum(negative.data, 0.0)
    positive.eliminate_zeros()
    negative.eliminate_zeros()
    return positive, negative


def _product(rows, matrix):
    """``rows @ matrix.T`` (float64 ndarray) for a CSR ``matrix``."""
    if matrix.shape[0] == 0 or matrix.shape[1] == 0 or rows.shape[0] == 0:
        return np.zeros((rows.shape[0], matrix.shape[0]))
    return times_transpose(rows, matrix)


def _interval_product(low, high, matrix_signs):
    """Bounds of ``M v`` over ``low <= v <= high``, rows as samples:
    ``(M+ low + M- high, M+ high + M- low)``."""
    positive, negative = matrix_signs
    return (_product(low, positive) + _product(high, negative),
            _product(high, positive) + _product(low, negative))


def _check_box(lower, upper, n_features=None, names=("lower", "upper")):
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    for array, name in zip((lower, upper), names):
        if array.ndim != 2:
            raise ValueError(f"{name} must have shape (n_samples, n_features); got "
                             f"shape {array.shape}.")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} has non-finite entries.")
    if lower.shape != upper.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape; got "
                         f"{lower.shape} and {upper.shape}.")
    if n_features is not None and lower.shape[1] != n_features:
        raise ValueError(f"{names[0]} and {names[1]} have {lower.shape[1]} features but "
                         f"B has {n_features} columns.")
    if np.any(lower > upper):
        raise ValueError(f"{names[0]} must be <= {names[1]} everywhere (an empty box).")
    return lower, upper


def input_box(X, eps, *, clip=None):
    """The l_inf ball ``||u - x||_inf <= eps`` around each row of X, as a box.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Centres of the balls.
    eps : float or array-like broadcastable to (n_samples, n_features)
        Radius (>= 0); an array gives a radius per feature or per entry.
    clip : tuple of (float, float), default=None
        ``(low, high)``: the valid input range (e.g. ``(0, 1)`` for images),
        intersected with the ball. X itself must lie in it.

    Returns
    -------
    lower : ndarray of shape (n_samples, n_features)
    upper : ndarray of shape (n_samples, n_features)
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n_samples, n_features); got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("X has non-finite entries.")
    if isinstance(eps, Real):
        eps = float(eps)
    eps_array = np.asarray(eps, dtype=np.float64)
    if not np.all(np.isfinite(eps_array)) or np.any(eps_array < 0):
        raise ValueError(f"eps must be finite and >= 0; got {eps!r}.")
    try:
        eps_array = np.broadcast_to(eps_array, X.shape)
    except ValueError:
        raise ValueError(f"eps of shape {eps_array.shape} does not broadcast to X's "
                         f"shape {X.shape}.") from None
    lower, upper = X - eps_array, X + eps_array
    if clip is not None:
        try:
            low, high = (float(value) for value in clip)
        except (TypeError, ValueError):
            raise ValueError(f"clip must be a pair (low, high); got {clip!r}.") from None
        if not low <= high:
            raise ValueError(f"clip must have low <= high; got {clip!r}.")
        if np.any(X < low) or np.any(X > high):
            raise ValueError(f"X has values outside clip={clip!r}; the box would be "
                             "empty or would not contain X.")
        lower, upper = np.maximum(lower, low), np.minimum(upper, high)
    return lower, upper


# ------------------------------------------------------------- state boxes
def interval_states(A, B, state_intercept, lower, upper, *, tol=1e-9, max_iter=10000,
                    method="auto"):
    """Boxes containing the equilibrium states of every input of a box.

    For each sample, every ``u`` with ``lower <= u <= upper`` has its
    equilibrium ``x(u) = relu(A x(u) + B u + b)`` inside ``[x_low, x_high]``.
    The boxes are the iterates of the interval map

        ``[l, h] -> [relu(A+ l + A- h + B+ lo + B- hi + b),
        relu(A+ h + A- l + B+ hi + B- lo + b)]``

    (``M+ = max(M, 0)``, ``M- = min(M, 0)``) started from the a-priori box
    ``0 <= x <= X0``, ``X0 = (||B||_inf max|u| + ||b||_inf) / (1 - ||A||_inf)``.
    The map is inclusion-monotone and sends that box into itself, so every
    iterate is a sound (and smaller) box; it contracts in l_inf by
    ``||A||_inf < 1``. When ``A`` is strictly lower triangular (a feed-forward
    model, ``structure="feedforward"``, or a teacher network written by
    :func:`sksim.baselines.mlp_implicit_blocks`), the iteration is exact after
    one pass over the blocks of :func:`sksim.solvers.equilibrium.forward_blocks`,
    which is what is computed (whatever ``||A||_inf``): that pass is IBP of
    the network, layer by layer.

    Parameters
    ----------
    A : ndarray or sparse matrix of shape (n_states, n_states)
        ``||A||_inf < 1`` unless A is strictly lower triangular.
    B : ndarray or sparse matrix of shape (n_states, n_features)
    state_intercept : array-like of shape (n_states,)
    lower : array-like of shape (n_samples, n_features)
        Lower corners of the input boxes.
    upper : array-like of shape (n_samples, n_features)
        Upper corners (``lower <= upper``).
    tol : float, default=1e-9
        The iteration stops when no bound moved by more than ``tol`` in a step.
    max_iter : int, default=10000
        Most steps of the iteration; after them a ConvergenceWarning is
        issued and the last (still sound, but looser) boxes are returned.
    method : {"auto", "iterate"}, default="auto"
        ``"auto"``: the one-pass computation when A is feed-forward, else
        the iteration; ``"iterate"``: always the iteration (needs
        ``||A||_inf < 1``; on a feed-forward A it reaches the one-pass boxes
        after as many steps as A has blocks).

    Returns
    -------
    x_low : ndarray of shape (n_samples, n_states)
    x_high : ndarray of shape (n_samples, n_states)

    Raises
    ------
    ValueError
        On shape mismatches, non-finite entries, ``lower > upper``, or when
        ``||A||_inf >= 1`` and A is not feed-forward (or ``method="iterate"``).
    """
    A, B = _csr(A, "A"), _csr(B, "B")
    n_states = A.shape[0]
    if A.shape != (n_states, n_states):
        raise ValueError(f"A must be square; got shape {A.shape}.")
    if B.shape[0] != n_states:
        raise ValueError(f"B has {B.shape[0]} rows but A has {n_states} states.")
    bias = np.asarray(state_intercept, dtype=np.float64).reshape(-1) \
        if np.ndim(state_intercept) else np.full(n_states, float(state_intercept))
    if bias.shape != (n_states,):
        raise ValueError(f"state_intercept must have shape ({n_states},); got "
                         f"{np.shape(state_intercept)}.")
    if not np.all(np.isfinite(bias)):
        raise ValueError("state_intercept has non-finite entries.")
    if method not in ("auto", "iterate"):
        raise ValueError(f"method must be 'auto' or 'iterate'; got {method!r}.")
    if not (isinstance(tol, Real) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0; got {tol!r}.")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter must be an integer >= 1; got {max_iter!r}.")
    lower, upper = _check_box(lower, upper, B.shape[1])

    drive_low, drive_high = _interval_product(lower, upper, _split_signs(B))
    drive_low += bias
    drive_high += bias
    blocks = forward_blocks(A) if method == "auto" else None
    if blocks is not None:
        return _forward_pass(A, drive_low, drive_high, blocks)

    a_norm = infinity_norm(A)
    if not a_norm < 1.0:
        reason = ("is not strictly lower triangular (feed-forward)" if method == "auto"
                  else "method='iterate' needs ||A||_inf < 1")
        raise ValueError(
            f"A has ||A||_inf = {a_norm:.6g} >= 1 and {reason}: the equilibrium "
            "need not be unique and the interval iteration has no a-priori box.")
    magnitude = np.maximum(np.abs(lower), np.abs(upper)).max(axis=1, initial=0.0)
    radius = (infinity_norm(B) * magnitude
              + np.abs(bias).max(initial=0.0)) / (1.0 - a_norm)
    low = np.zeros_like(drive_low)
    high = np.repeat(radius[:, None], n_states, axis=1)
    signs = _split_signs(A)
    for _ in range(max_iter):
        product_low, product_high = _interval_product(low, high, signs)
        new_low = np.maximum(product_low + drive_low, 0.0)
        new_high = np.maximum(product_high + drive_high, 0.0)
        # each iterate is sound (and nested in exact arithmetic): intersecting
        # keeps the boxes nested under rounding too
        np.maximum(new_low, low, out=new_low)
        np.minimum(new_high, high, out=new_high)
        change = max(np.abs(new_low - low).max(initial=0.0),
                     np.abs(new_high - high).max(initial=0.0))
        low, high = new_low, new_high
        if change <= tol:
            return low, high
    warnings.warn(
        f"The interval iteration did not reach tol={tol:g} within max_iter={max_iter} "
        f"steps (last change {change:.3e}); the boxes returned are sound but looser "
        "than the limit. Increase max_iter.", ConvergenceWarning)
    return low, high


def _forward_pass(A, drive_low, drive_high, blocks):
    """The interval iteration's limit on a strictly lower triangular A: one
    pass, block by block (each block reads only final earlier blocks)."""
    low, high = drive_low, drive_high  # overwritten in place, block by block
    for start, stop in blocks:
        if start:
            rows = A[start:stop, :start]
            if rows.nnz:
                product_low, product_high = _interval_product(
                    low[:, :start], high[:, :start], _split_signs(sp.csr_array(rows)))
                low[:, start:stop] += product_low
                high[:, start:stop] += product_high
        np.maximum(low[:, start:stop], 0.0, out=low[:, start:stop])
        np.maximum(high[:, start:stop], 0.0, out=high[:, start:stop])
    return low, high


def mlp_interval_states(coefs, intercepts, lower, upper):
    """IBP of a ReLU MLP: boxes of its hidden activations over input boxes.

    Parameters
    ----------
    coefs : list of array-like, coefs[l] of shape (n_in_l, n_out_l)
        Weight matrices in scikit-learn's convention (``MLPClassifier.coefs_``;
        a torch ``nn.Linear``'s ``weight.T``). Every layer but the last is
        followed by a ReLU.
    intercepts : list of array-like, intercepts[l] of shape (n_out_l,)
    lower : array-like of shape (n_samples, n_features)
    upper : array-like of shape (n_samples, n_features)

    Returns
    -------
    x_low : ndarray of shape (n_samples, n_hidden)
    x_high : ndarray of shape (n_samples, n_hidden)
        The hidden activations of all hidden layers side by side, in the
        order of :func:`sksim.baselines.mlp_implicit_blocks`'s states
        (``n_hidden`` is the sum of the hidden widths; 0 without hidden
        layers).
    """
    coefs, intercepts = _check_mlp(coefs, intercepts)
    lower, upper = _check_box(lower, upper, coefs[0].shape[0])
    lows, highs = [], []
    low, high = lower, upper
    for weight, bias in zip(coefs[:-1], intercepts[:-1]):
        low, high = _interval_product(low, high, _split_signs(_csr(weight.T, "coefs")))
        low = np.maximum(low + bias, 0.0)
        high = np.maximum(high + bias, 0.0)
        lows.append(low)
        highs.append(high)
    if not lows:
        empty = np.zeros((lower.shape[0], 0))
        return empty, empty.copy()
    return np.hstack(lows), np.hstack(highs)


def _check_mlp(coefs, intercepts):
    coefs = [np.asarray(c, dtype=np.float64) for c in coefs]
    intercepts = [np.asarray(b, dtype=np.float64).reshape(-1) for b in intercepts]
    if not coefs or len(coefs) != len(intercepts):
        raise ValueError(f"coefs and intercepts must be non-empty lists of equal length; "
                         f"got {len(coefs)} and {len(intercepts)}.")
    previous = coefs[0].shape[0] if coefs[0].ndim == 2 else None
    for layer, (weight, bias) in enumerate(zip(coefs, intercepts)):
        if weight.ndim != 2 or weight.shape[0] != previous:
            raise ValueError(f"coefs[{layer}] has shape {weight.shape}; expected "
                             f"({previous}, n_out) (scikit-learn's convention).")
        if bias.shape != (weight.shape[1],):
            raise ValueError(f"intercepts[{layer}] has shape {bias.shape}; expected "
                             f"({weight.shape[1]},).")
        if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
            raise ValueError(f"layer {layer} has non-finite weights.")
        previous = weight.shape[1]
    return coefs, intercepts


# ---------------------------------------------------------------- margins
def _predicted_index(outputs):
    """The predicted class index of raw outputs, as the estimators decide:
    ``output > 0`` for a single column, else the first argmax."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).astype(np.intp)
    return np.argmax(outputs, axis=1)


def _margin_rows(C, D, intercept, predicted):
    """``(W, V, e)`` with rows ``(C_c - C_j, D_c - D_j, d_c - d_j)`` of the
    predicted class c against each class j (the row of j = c is dropped), or
    ``+-(C, D, d)`` for a single output (the label is its sign)."""
    if C.shape[0] == 1:
        sign = 1.0 if predicted == 1 else -1.0
        return sign * C, sign * D, sign * intercept
    others = np.arange(C.shape[0]) != predicted
    return ((C[predicted] - C)[others], (D[predicted] - D)[others],
            (intercept[predicted] - intercept)[others])


def _certify_margins(outputs, x_low, x_high, u_low, u_high, C, D, intercept):
    """Certified (bool per sample) and predicted index of each sample: the
    margin rows' lower bounds over the state and input boxes all > 0."""
    C = C.toarray() if sp.issparse(C) else np.asarray(C, dtype=np.float64)
    D = D.toarray() if sp.issparse(D) else np.asarray(D, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
    predicted = _predicted_index(outputs)
    certified = np.zeros(outputs.shape[0], dtype=bool)
    for label in np.unique(predicted):
        rows = np.flatnonzero(predicted == label)
        W, V, e = _margin_rows(C, D, intercept, label)
        W_pos, W_neg = np.maximum(W, 0.0), np.minimum(W, 0.0)
        V_pos, V_neg = np.maximum(V, 0.0), np.minimum(V, 0.0)
        bound = (x_low[rows] @ W_pos.T + x_high[rows] @ W_neg.T
                 + u_low[rows] @ V_pos.T + u_high[rows] @ V_neg.T + e)
        certified[rows] = np.all(bound > 0.0, axis=1)
    return certified, predicted


def _estimator_parts(estimator, X):
    """Validated X and the flat ``(A, B, b, C, D, d)`` of a fitted SIMClassifier."""
    from .estimators import SIMClassifier

    if not isinstance(estimator, SIMClassifier):
        raise TypeError(f"estimator must be a fitted SIMClassifier; got "
                         f"{type(estimator).__name__}.")
    check_is_fitted(estimator)
    if estimator._is_weight_shared():
        structure = estimator.structure_
        if not structure.all_relu() or structure.has_max_pool():
            raise ValueError(
                "certified predictions need a ReLU model with linear links: this "
                "weight-shared model has non-ReLU activations or max pooling, which "
                "have no unrolled A_, B_ with x = relu(A x + B u + b).")
    X = validate_data(estimator, X, reset=False, dtype=[np.float64, np.float32])
    parts = tuple(getattr(estimator, name) for name in
                  ("A_", "B_", "state_intercept_", "C_", "D_", "intercept_"))
    return np.asarray(X, dtype=np.float64), parts


def _certified_and_labels(estimator, X, eps, clip, tol, max_iter):
    X, (A, B, b, C, D, d) = _estimator_parts(estimator, X)
    lower, upper = input_box(X, eps, clip=clip)
    x_low, x_high = interval_states(A, B, b, lower, upper, tol=tol, max_iter=max_iter)
    outputs = estimator._raw_outputs(X)
    certified, predicted = _certify_margins(outputs, x_low, x_high, lower, upper, C, D, d)
    return certified, estimator.classes_[predicted]


def certified_predictions(estimator, X, eps, *, clip=None, tol=1e-9, max_iter=10000):
    """Where a fitted SIMClassifier's prediction provably cannot change.

    Sample ``i`` is certified when every ``u'`` with
    ``||u' - X[i]||_inf <= eps`` (and ``clip[0] <= u' <= clip[1]`` when
    ``clip`` is given) gets the label predicted at ``X[i]``: with the state
    box of :func:`interval_states`, the lower bound of each margin
    ``(C_c - C_j) x + (D_c - D_j) u' + (d_c - d_j)`` between the predicted
    class ``c`` and every other class ``j``, by interval arithmetic on the
    difference rows, is positive. For a single output column (a binary
    model on one logit) the bound is that of the output, signed by the
    predicted class (class 1 when it is positive).

    A weight-shared (convolutional) estimator is certified through its
    unrolled matrices (``A_`` etc., built on first access), when its
    activations are all ReLU and it has no max pooling; otherwise a
    ValueError is raised.

    Parameters
    ----------
    estimator : SIMClassifier
        Fitted.
    X : array-like of shape (n_samples, n_features)
    eps : float or array-like broadcastable to (n_samples, n_features)
        l_inf radius, >= 0.
    clip : tuple of (float, float), default=None
        Valid input range, intersected with the ball (e.g. ``(0, 1)``).
    tol : float, default=1e-9
        Of :func:`interval_states`.
    max_iter : int, default=10000
        Of :func:`interval_states`.

    Returns
    -------
    certified : ndarray of bool, shape (n_samples,)
    """
    return _certified_and_labels(estimator, X, eps, clip, tol, max_iter)[0]


def certified_accuracy(estimator, X, y, eps, *, clip=None, tol=1e-9, max_iter=10000):
    """Fraction of samples whose prediction is correct and certified at ``eps``.

    Parameters
    ----------
    estimator : SIMClassifier
        Fitted.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        True labels.
    eps : float or array-like broadcastable to (n_samples, n_features)
    clip : tuple of (float, float), default=None
    tol : float, default=1e-9
    max_iter : int, default=10000

    Returns
    -------
    accuracy : float
        Mean of ``certified_predictions(...) & (predict(X) == y)``; a lower
        bound of the accuracy under any l_inf attack of radius ``eps``.
    """
    certified, labels = _certified_and_labels(estimator, X, eps, clip, tol, max_iter)
    y = _check_labels(y, len(labels))
    return float(np.mean(certified & (labels == y))) if len(y) else 0.0


def _check_labels(y, n_samples):
    y = np.asarray(y)
    if y.shape != (n_samples,):
        raise ValueError(f"y must have shape ({n_samples},); got {y.shape}.")
    return y


def _mlp_certified(coefs, intercepts, X, eps, clip):
    coefs, intercepts = _check_mlp(coefs, intercepts)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != coefs[0].shape[0]:
        raise ValueError(f"X must have shape (n_samples, {coefs[0].shape[0]}); got "
                         f"{X.shape}.")
    lower, upper = input_box(X, eps, clip=clip)
    x_low, x_high = mlp_interval_states(coefs, intercepts, lower, upper)
    activation = X
    for weight, bias in zip(coefs[:-1], intercepts[:-1]):
        activation = np.maximum(activation @ weight + bias, 0.0)
    outputs = activation @ coefs[-1] + intercepts[-1]
    if len(coefs) == 1:  # no hidden layer: the outputs read the inputs only
        C, D = np.zeros((coefs[0].shape[1], 0)), coefs[0].T
    else:
        last = coefs[-2].shape[1]
        x_low, x_high = x_low[:, -last:], x_high[:, -last:]
        C, D = coefs[-1].T, np.zeros((coefs[-1].shape[1], X.shape[1]))
    return _certify_margins(outputs, x_low, x_high, lower, upper, C, D, intercepts[-1])


def certified_mlp_predictions(coefs, intercepts, X, eps, *, clip=None):
    """Where a ReLU MLP's prediction provably cannot change (IBP).

    The MLP computes ``h_l = relu(h_{l-1} @ coefs[l] + intercepts[l])`` for
    every layer but the last, which gives the logits; its label is the
    argmax of the logits, or for a single logit (scikit-learn's binary
    ``MLPClassifier``) class 1 when it is positive. Certification is that of
    :func:`certified_predictions` with the boxes of
    :func:`mlp_interval_states`: on the network written as an implicit model
    (:func:`sksim.baselines.mlp_implicit_blocks`) both compute the same
    bounds.

    Parameters
    ----------
    coefs : list of array-like, coefs[l] of shape (n_in_l, n_out_l)
        scikit-learn's ``coefs_`` convention (a torch ``nn.Linear``'s
        ``weight.T``).
    intercepts : list of array-like, intercepts[l] of shape (n_out_l,)
    X : array-like of shape (n_samples, n_features)
    eps : float or array-like broadcastable to (n_samples, n_features)
        l_inf radius, >= 0.
    clip : tuple of (float, float), default=None
        Valid input range, intersected with the ball.

    Returns
    -------
    certified : ndarray of bool, shape (n_samples,)
    """
    return _mlp_certified(coefs, intercepts, X, eps, clip)[0]


def certified_mlp_accuracy(coefs, intercepts, X, y, eps, *, clip=None, classes=None):
    """Fraction of samples a ReLU MLP classifies correctly and certifiably.

    Parameters
    ----------
    coefs : list of array-like, coefs[l] of shape (n_in_l, n_out_l)
    intercepts : list of array-like, intercepts[l] of shape (n_out_l,)
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        True labels.
    eps : float or array-like broadcastable to (n_samples, n_features)
    clip : tuple of (float, float), default=None
    classes : array-like of shape (n_classes,), default=None
        The label of each logit (``MLPClassifier.classes_``); None means
        ``0, 1, ..., n_outputs - 1`` (``[0, 1]`` for a single logit).

    Returns
    -------
    accuracy : float
    """
    certified, predicted = _mlp_certified(coefs, intercepts, X, eps, clip)
    n_outputs = np.shape(coefs[-1])[1]
    classes = np.arange(max(n_outputs, 2)) if classes is None else np.asarray(classes)
    y = _check_labels(y, len(predicted))
    return float(np.mean(certified & (classes[predicted] == y))) if len(y) else 0.0

"""The fitted attributes of the SIM estimators, listed once.

Each :class:`FittedAttribute` says how the attribute is stored in a model
file (``kind``), which dimensions it must have when a file is loaded
(``shape``), its numpydoc entry (``type`` and ``doc``) and which fits set it
(``only``). The estimators' Attributes section, the attributes a refit
forgets, :mod:`sksim.persistence` and the round-trip tests are all driven by
:data:`FITTED_ATTRIBUTES`, so an attribute added here is documented, cleared,
saved, loaded and tested, and one a fit sets without being added here fails
the tests.
"""

import re
import textwrap
from typing import NamedTuple


class FittedAttribute(NamedTuple):
    """One fitted attribute.

    Attributes
    ----------
    name : str
    kind : str
        How it is stored: ``"matrix"`` (CSR arrays; a weight-shared model
        unrolls it from its kernels instead), ``"vector"`` (float64 array),
        ``"optional vector"`` (float64 array or None, absent from the file
        when None), ``"count"`` (positive int), ``"float"``, ``"labels"``
        (numeric or string array), ``"weight-shared model"`` (the structure
        and kernels, stored together), ``"private count"`` (a private int),
        ``"teacher"`` (not saved: None after loading) or ``"property"``
        (computed on access, not saved).
    shape : tuple of str
        Names of the dimensions the stored array must have (``"n_rows"``:
        one per state row, which is one per channel of each block for a
        weight-shared model); empty for anything else.
    type : str
        The numpydoc type line.
    doc : str or None
        The numpydoc description; None for private attributes (undocumented).
    only : str or None
        The fits that set it: ``"weight_shared"``, ``"classifier"``,
        ``"regressor"``, ``"named_features"`` (X had feature names), or None
        for every fit.
    clears_on_refit : bool
        Whether a refit forgets it before fitting (False for what the input
        validation sets before the model's stages run).
    """

    name: str
    kind: str
    shape: tuple
    type: str
    doc: object = None
    only: object = None
    clears_on_refit: bool = True


FITTED_ATTRIBUTES = (
    FittedAttribute(
        "A_", "matrix", ("n_states", "n_states"),
        "scipy.sparse.csr_array of shape (n_states, n_states)",
        "State-to-state matrix; ``||A_||_inf <= kappa``."),
    FittedAttribute(
        "B_", "matrix", ("n_states", "n_features"),
        "scipy.sparse.csr_array of shape (n_states, n_features)",
        "Input-to-state matrix."),
    FittedAttribute(
        "C_", "matrix", ("n_outputs", "n_states"),
        "scipy.sparse.csr_array of shape (n_outputs, n_states)",
        "State-to-output matrix."),
    FittedAttribute(
        "D_", "matrix", ("n_outputs", "n_features"),
        "scipy.sparse.csr_array of shape (n_outputs, n_features)",
        "Input-to-output matrix."),
    FittedAttribute(
        "state_intercept_", "vector", ("n_states",), "ndarray of shape (n_states,)",
        "Intercepts ``b_x`` of the states."),
    FittedAttribute(
        "intercept_", "vector", ("n_outputs",), "ndarray of shape (n_outputs,)",
        "Intercepts ``b_y`` of the outputs."),
    FittedAttribute("n_states_", "count", (), "int", "Number of states."),
    FittedAttribute(
        "baseline_", "teacher", (), "estimator or None",
        "The fitted teacher (None when ``states`` were given). Not saved by "
        ":func:`sksim.save_model`: None after loading."),
    FittedAttribute(
        "state_scales_", "optional vector", ("n_states",),
        "ndarray of shape (n_states,) or None",
        "Scale applied to each teacher state (see ``state_scaling``); None for "
        "user states, ``state_scaling=\"none\"`` and torch teachers that are "
        "not a chain under ``\"well_posed\"`` (states used as recorded)."),
    FittedAttribute(
        "state_duality_gaps_", "vector", ("n_rows",), "ndarray of shape (n_states,)",
        "Duality gap of each constrained state row (optimality certificate). "
        "For a weight-shared model this and the other per-row state arrays "
        "have one entry per row, that is per channel of each block."),
    FittedAttribute(
        "state_objectives_", "vector", ("n_rows",), "ndarray of shape (n_states,)",
        "Objective of each state row at the returned solution."),
    FittedAttribute(
        "state_multipliers_", "vector", ("n_rows",), "ndarray of shape (n_states,)",
        "Lagrange multiplier of ``||a_i||_1 <= kappa`` behind the dual bound."),
    FittedAttribute(
        "state_row_bound_multipliers_", "vector", ("n_rows",),
        "ndarray of shape (n_states,)",
        "Lagrange multiplier of ``||(a_i, b_i)||_1 <= row_bound`` (0 when the "
        "bound is inactive or absent)."),
    FittedAttribute(
        "output_row_bound_multipliers_", "vector", ("n_outputs",),
        "ndarray of shape (n_outputs,)",
        "Same for ``||(c_k, d_k)||_1 <= row_bound``."),
    FittedAttribute(
        "output_duality_gaps_", "vector", ("n_outputs",), "ndarray of shape (n_outputs,)",
        "Duality gap of each output row (optimality certificate)."),
    FittedAttribute(
        "output_objectives_", "vector", ("n_outputs",), "ndarray of shape (n_outputs,)",
        "Objective of each output row at the returned solution."),
    FittedAttribute(
        "n_iter_", "count", (), "int",
        "Largest number of coordinate-descent epochs over all rows (>= 1)."),
    FittedAttribute(
        "lipschitz_path_bound_", "property", (), "float",
        "``|| |C| (I - |A|)^-1 |B| + |D| ||_inf``, also a certified l_inf "
        "Lipschitz bound, never above ``lipschitz_bound_`` (property). A "
        "weight-shared model computes it from its kernels: through pooling "
        "stages (overlapping average windows, max pooling) it is an upper bound "
        "of the unrolled expression, and still certified."),
    FittedAttribute(
        "lipschitz_bound_", "float", (), "float",
        "``||C||_inf ||B||_inf / (1 - ||A||_inf) + ||D||_inf``: for any inputs "
        "``u, u'``, ``||y(u) - y(u')||_inf <= lipschitz_bound_ * ||u - u'||_inf``. "
        "For a weight-shared model the norms are the kernels' row sums, exact "
        "without pooling and upper bounds through pooling stages."),
    FittedAttribute(
        "n_nonzero_", "property", (), "int",
        "Nonzero parameters in A, B, C, D; for a weight-shared model the "
        "nonzero kernel entries (each shared weight once), comparable with "
        "the teacher's parameter count."),
    FittedAttribute(
        "structure_", "weight-shared model", (), "Structure",
        "Weight-shared model only: the state blocks and their links.",
        only="weight_shared"),
    FittedAttribute(
        "kernels_", "weight-shared model", (), "list of list of ndarray",
        "Weight-shared model only: ``kernels_[b][l]`` of shape (out channels, "
        "link width) is the kernel of link ``l`` of block ``b``.",
        only="weight_shared"),
    FittedAttribute(
        "block_intercepts_", "weight-shared model", (), "list of ndarray",
        "Weight-shared model only: per-channel intercepts of each block.",
        only="weight_shared"),
    FittedAttribute(
        "output_kernels_", "weight-shared model", (), "list of ndarray",
        "Weight-shared model only: kernels of the output links.",
        only="weight_shared"),
    FittedAttribute(
        "block_scales_", "vector", ("n_blocks",), "ndarray of shape (n_blocks,)",
        "Weight-shared model only: the scale of each block's states.",
        only="weight_shared"),
    FittedAttribute(
        "block_row_bounds_", "optional vector", ("n_blocks + 1",),
        "ndarray of shape (n_blocks + 1,) or None",
        "Weight-shared model with ``row_bound`` only: the L1 bound enforced on "
        "the rows of each block, then on the output rows (None without "
        "``row_bound``).",
        only="weight_shared"),
    FittedAttribute(
        "n_features_in_", "count", (), "int",
        "Number of features seen during ``fit``.", clears_on_refit=False),
    FittedAttribute(
        "feature_names_in_", "labels", ("n_features",),
        "ndarray of shape (n_features,)",
        "Names of the features seen during ``fit``; only when X has feature "
        "names that are all strings.",
        only="named_features", clears_on_refit=False),
    FittedAttribute(
        "classes_", "labels", (), "ndarray of shape (n_classes,)",
        "The class labels, sorted: those of y, or a TorchBaseline's ``classes`` "
        "when given (its output columns' labels, also those absent from y).",
        only="classifier", clears_on_refit=False),
    FittedAttribute(
        "_y_ndim", "private count", (), "int", only="regressor",
        clears_on_refit=False),
    FittedAttribute(
        "_n_targets", "private count", (), "int", only="regressor",
        clears_on_refit=False),
)


def attributes_of_fit(*, classifier, weight_shared, named_features=False):
    """The attributes a fit sets: a classifier or a regressor, a weight-shared
    model or a flat one, on X with or without feature names."""
    applies = {None: True, "classifier": classifier, "regressor": not classifier,
               "weight_shared": weight_shared, "named_features": named_features}
    return tuple(attribute for attribute in FITTED_ATTRIBUTES
                 if applies[attribute.only])


def attributes_doc(*, classifier):
    """The numpydoc Attributes entries (without the header) of SIMClassifier
    (``classifier=True``) or SIMRegressor."""
    lines = [""]
    for attribute in FITTED_ATTRIBUTES:
        if attribute.doc is None or attribute.only == ("regressor" if classifier
                                                       else "classifier"):
            continue
        lines.append(f"    {attribute.name} : {attribute.type}")
        lines.append(_wrapped(attribute.doc))
    return "\n".join(lines) + "\n"


def _wrapped(text):
    """``text`` as an indented numpydoc paragraph; an inline literal
    (````...````) is never split over two lines."""
    keep = re.sub(r"``.*?``", lambda literal: literal.group().replace(" ", "\0"), text)
    return textwrap.fill(keep, width=79, initial_indent=" " * 8,
                         subsequent_indent=" " * 8, break_on_hyphens=False,
                         break_long_words=False).replace("\0", " ")


def attribute(name):
    """The :class:`FittedAttribute` called ``name``."""
    return next(a for a in FITTED_ATTRIBUTES if a.name == name)

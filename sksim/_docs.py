"""The docstrings the SIM estimators share: the objective, the parameters and
``fit``'s (the Attributes sections come from :mod:`sksim._attributes`)."""

OBJECTIVE_DOC = r"""
    The model computes hidden states as the fixed point
    ``x = relu(A x + B u + b_x)`` and predicts ``y = C x + D u + b_y``. Fitting
    records the teacher's pre-activations ``Z`` (``m`` samples x ``n`` states),
    post-activations ``X = relu(Z)`` and the inputs ``U``, and solves one convex
    problem per row on the shared design ``W = [X, U]`` (columns centred when
    ``fit_intercept``; intercepts unpenalised; no other rescaling):

    state row ``i`` (``z_i`` = column ``i`` of ``Z``)::

        min_{a_i, b_i}  1/(2m) ||z_i - X a_i - U b_i||^2
                        + alpha * l1_ratio * ||(a_i, b_i)||_1
                        + 0.5 * alpha * (1 - l1_ratio) * ||(a_i, b_i)||_2^2
        s.t.            ||a_i||_1 <= kappa,  ||(a_i, b_i)||_1 <= row_bound

    output row ``k`` (``t_k`` = target column ``k``; ``X*`` replaces ``X`` when
    ``refit_outputs``)::

        min_{c_k, d_k}  1/(2m) ||t_k - X c_k - U d_k||^2
                        + output_alpha * l1_ratio * ||(c_k, d_k)||_1
                        + 0.5 * output_alpha * (1 - l1_ratio) * ||(c_k, d_k)||_2^2
        s.t.            ||(c_k, d_k)||_1 <= row_bound

    (the ``row_bound`` constraints only when it is set), which is scikit-learn's ElasticNet scaling (``l1_ratio=1`` is the Lasso).
    Each row is solved until its duality gap is at most ``tol`` times its
    objective, and every returned model satisfies ``||A||_inf <= kappa``
    exactly (in floating point, for any summation order), so the equilibrium
    exists, is unique and is reached from any start.
"""

PARAMETERS_DOC = """
    baseline : None, sklearn MLP, FrozenEstimator or TorchBaseline, default=None
        Where the states come from when ``fit`` gets no ``states``. ``None``
        trains an embedded ReLU MLP teacher with hidden layers (64, 32); an
        MLP is cloned and trained on (X, y); one wrapped in
        ``sklearn.frozen.FrozenEstimator`` is used as is. The teacher's
        states are rescaled block by block as ``state_scaling`` says.
    alpha : float, default=1e-3
        Penalty weight of the state rows. Must be positive unless
        ``row_bound`` is set (``alpha=0`` is then the pure constrained form:
        sparsity comes from the bounds alone).
    output_alpha : float, default=None
        Penalty weight of the output rows; ``None`` uses ``alpha``. Zero
        needs ``row_bound`` as for ``alpha``.
    l1_ratio : float, default=1.0
        Elastic-net mix as in ElasticNet: 1 is the Lasso, 0 pure ridge.
    solver : {"auto", "cd", "homotopy"}, default="auto"
        Row solver, both exact and certified by the same duality gap:
        coordinate descent with the multiplier search of the ``kappa`` bound
        (``"cd"``), or the homotopy that follows each row's bound-constrained
        path exactly from ``alpha_max`` down to ``alpha`` (``"homotopy"``,
        see :mod:`sksim.solvers.homotopy`; it follows one bound, so state
        rows under ``row_bound`` and rows it cannot certify are solved by
        coordinate descent; output rows under ``row_bound`` follow that
        bound over the whole row).
        ``"auto"`` picks per group of rows by
        :func:`sksim.solvers.auto_solver`: the homotopy for rows with one
        bound (the state rows' ``kappa``, the output rows' ``row_bound``),
        coordinate descent for rows with both, and for unbounded output rows
        coordinate descent when the design is well conditioned, else the
        homotopy.
    relax : float in (0, 1], default=0.01
        The relaxed Lasso: below 1, every row (state and output) is solved
        again on its support with both penalties multiplied by ``relax``,
        under the same bounds. ``alpha`` then chooses which entries are
        nonzero and ``relax * alpha`` how much they are shrunk; small values
        undo the Lasso's shrinkage, which compounds from block to block in
        deep teachers. The row certificates are those of the restricted
        problems. 1 is the plain solve (the SIM paper's row problem); the
        default 0.01 was chosen on validation splits of the committed
        experiments (docs: "How the defaults were chosen"), where it was
        more accurate at equal nonzeros on all four, by 1.1 to 9.4 points.
    kappa : float, default=0.95
        Well-posedness bound on ``||A||_inf``, in the open interval (0, 1).
    row_bound : float, default=None
        Robust fitting: bound on the L1 norm of every row of ``[A B]`` and of
        ``[C D]`` (intercepts excluded), enforced exactly like ``kappa``. It
        bounds the certified sensitivity by construction:
        ``lipschitz_bound_ <= row_bound**2 / (1 - kappa) + row_bound``.
        ``None`` means no such bound. For a weight-shared model the bound is
        relative to the teacher (its block scales make absolute units
        arbitrary): the rows of block ``b``, and the output rows, are bounded
        by ``row_bound`` times the largest row L1 norm of the teacher's own
        rescaled kernel there (``block_row_bounds_``), so ``row_bound=1``
        admits the teacher and ``lipschitz_path_bound_`` falls with
        ``row_bound`` to the power of the depth.
    activation : {"relu"}, default="relu"
        The componentwise activation ``phi``.
    fit_intercept : bool, default=True
        Fit the unpenalised intercepts ``b_x`` and ``b_y``.
    refit_outputs : bool, default=True
        Fit the output rows on the model's own equilibrium states ``X*``
        instead of the teacher's, so predictions are consistent with what the
        model computes.
    tol : float, default=1e-6
        Relative duality-gap tolerance of every row problem.
    max_iter : int, default=20000
        Maximum coordinate-descent epochs per row.
    equilibrium_tol : float, default=1e-12
        Residual tolerance of the equilibrium, relative to ``max(1, ||x||_inf)``.
    equilibrium_max_iter : int, default=1000
        Maximum Gauss-Seidel sweeps of the equilibrium per sample.
    n_jobs : int, default=None
        Threads for the row solver and the equilibrium. ``None`` or ``-1`` uses
        all of numba's threads (as scikit-learn's OpenMP estimators do).
    random_state : int, RandomState instance or None, default=None
        Seeds the embedded teacher. The row solver is deterministic.
    verbose : int, default=0
        Print the fit's progress: each stage's time (teacher, Gram matrices),
        the rows solved so far with an estimate of the time left, and a
        one-line summary at the end. The rows are then solved in eight
        batches (same results).
    weight_sharing : {"auto"} or bool, default="auto"
        Fit the weight-shared model (one kernel per link of each state block,
        see :mod:`sksim.weight_sharing`) for a ``TorchBaseline`` teacher:
        ``"auto"`` when the teacher has convolutional blocks, ``True`` always
        (an error if the teacher is not a chain of affine layers between its
        ReLUs), ``False`` never (the flat model).
    lateral_kernel : int, default=None
        Weight-shared model: add a same-resolution ``k x k`` convolution of
        each spatial block on itself (the equilibrium then iterates).
    skip_links : int, default=0
        Weight-shared model: add up to this many skip links into each
        spatial block, from the nearest earlier spatial blocks of equal or
        finer resolution that its teacher layer does not read (3 x 3
        convolutions, padding 1, strided down to the block's resolution).
        They keep the model feed-forward; their columns share the ``kappa``
        bound with the block's other state links.
    positions_per_image : int, default=None
        Weight-shared model: output positions kept per image and block (at
        random, seeded by ``random_state``) in the row designs; ``None`` all.
    block_alpha : {"positions", "relative", "absolute"}, default="positions"
        Weight-shared model: the penalty of block ``b`` is ``alpha`` times the
        RMS of its targets times the RMS of its design columns
        (``"relative"``: independent of the block's state scale), that
        divided by the square root of the block's output positions per image
        (``"positions"``: high-resolution blocks keep more entries), or
        ``alpha`` itself (``"absolute"``); the output rows likewise (one
        position).
    state_inputs : {"teacher", "model"}, default="teacher"
        Feed-forward model (weight-shared, or flat with
        ``structure="feedforward"``): the designs of block ``b`` read
        the teacher's states of the earlier blocks (one pass over the data
        for all blocks), or the fitted model's own states of the earlier
        blocks (``"model"``: blocks fitted in order, one pass (a flat model:
        one Gram matrix) each), so that each block learns from the inputs it
        will see at predict time; the targets are the teacher's states
        either way. A flat model needs its data in memory for ``"model"``;
        an in-memory weight-shared fit keeps the model's states of the blocks
        that later blocks read (up to 2 GiB), so the model runs once, not
        once per block.
    structure : {"implicit", "feedforward"}, default="implicit"
        ``"implicit"``: every state row may use every state (a general ``A``,
        well posed through ``kappa``). ``"feedforward"``: the rows of a block
        of states (a layer of the teacher) may use only the states of earlier
        blocks and the inputs, so ``A`` is strictly block lower triangular,
        the equilibrium is one pass, and the model is well posed for any
        ``A`` (``kappa`` still bounds its rows and the Lipschitz
        certificate). It is a constraint on the row problems (the excluded
        columns are fixed at zero), so every row stays exact and certified.
        The blocks are the teacher's layers, or ``state_blocks``. For a
        weight-shared model (already block-structured) it excludes
        ``lateral_kernel``.
    state_blocks : array-like of int, default=None
        Sizes of the blocks of states in forward order (summing to the number
        of states), for ``structure="feedforward"``: needed with precomputed
        ``states``; overrides the teacher's layers otherwise.
    output_target : {"baseline", "y"}, default="baseline"
        What the output rows fit when the teacher runs in ``fit`` (no
        ``states``): the teacher's raw outputs (``"baseline"``: logits for a
        classifier, before softmax or sigmoid, computed from ``coefs_`` and
        ``intercepts_`` for a scikit-learn MLP; its predictions for a
        regressor), so the model distils the teacher; or ``y`` (``"y"``:
        indicator targets for a classifier). ``baseline_outputs`` passed to
        ``fit`` are used whatever this says; with precomputed ``states`` and
        no ``baseline_outputs`` the output rows fit ``y``.
    state_scaling : {"well_posed", "rms", "none"}, default="well_posed"
        How the states of a flat teacher (a scikit-learn MLP or a
        TorchBaseline; not precomputed ``states``) are rescaled block by
        block (layer by layer; ReLU is positively homogeneous, so the
        teacher's outputs do not change). ``"well_posed"``: block ``b``
        reading block ``b - 1`` through a kernel of largest row L1 norm
        ``r`` is scaled by ``min(1, kappa / r)`` relative to it, so the
        teacher itself meets the bound and is a feasible point of the state
        rows (a torch module that is not a chain of Linear/Conv2d layers
        keeps its states as recorded). ``"rms"``: each block's states
        (after the activation) have unit root mean square over the training
        samples; no guarantee on the teacher's ``A``, any block structure.
        ``"none"``: as recorded. Weight-shared fits support
        ``"well_posed"`` only. The scales are in ``state_scales_``.
    penalty : {"l1", "channel"}, default="l1"
        ``"l1"``: every row's own (elastic-net) penalty, zeros scattered in
        the rows. ``"channel"``: the rows of a block are fitted together
        under a group penalty, one group per state channel the block reads
        (a flat model's state, which needs ``structure="feedforward"``; a
        weight-shared model's channel of a source block, every tap of every
        link from that block), over its entries in every row of the block,
        weighted ``alpha * sqrt(n_entries)`` so that a group of equal entries
        weighs what its L1 norm would; the inputs keep the plain L1 penalty,
        every row the ``kappa`` bound, and the rows are solved with a
        certified duality gap (:mod:`sksim.channels`,
        :mod:`sksim.solvers.groups`); the output rows likewise over the
        states. A channel no row reads is one the model does without:
        ``to_torch(plain=True)`` removes it with its own row. With ``relax <
        1`` the rows are then refitted one by one on the columns of the kept
        channels and the inputs some row uses (the plain row problems at
        ``relax * alpha``):
        the group penalty picks the channels, ``relax`` how much their rows
        are shrunk. With ``adaptive_l1`` (weight-shared fits) every entry,
        grouped or not, also pays its adaptive L1 weight (a sparse-group
        penalty: the groups pick channels, the adaptive weights the entries
        within them, e.g. a fitted shortcut's diagonal). Not with
        ``row_bound``.
    adaptive_l1 : float, default=0.0
        Weight-shared model: the exponent ``gamma`` of adaptive L1 weights
        from the teacher's own kernels (Zou 2006): entry ``j`` of row ``i``
        (state or output) pays ``alpha * (|K_ij| / rms(K_i) + 1e-3) ** -gamma``
        times its magnitude, ``K`` the teacher's kernels in the block scales'
        units (zero on links the teacher does not have, such as a fitted
        shortcut's off-diagonal entries), so the teacher's large weights are
        cheap to keep and its small ones dear. Each row stays one convex
        problem under the same bounds, certified the same way, solved by
        coordinate descent (the homotopy follows a uniform penalty). 0 is the
        plain L1 penalty.
    perturbation : {None, "uniform", "fgsm", "pgd"}, default=None
        Perturbation-aware state matching (see :mod:`sksim.perturbation`):
        the teacher also runs on perturbed inputs ``u'`` within
        ``perturbation_eps`` of ``u`` in l_inf (uniform noise, or the
        teacher's own FGSM / PGD adversarial examples), and every row, state
        and output, is fitted on the design of the perturbed run (the
        teacher's perturbed states, or the model's own equilibrium on ``u'``
        for the output rows) against the targets of the clean run: each
        block is asked to undo the perturbation. The rows stay one convex
        problem each, with the same solvers, certificates and ``kappa``
        bound. Needs a teacher (not precomputed ``states``); not available
        to :func:`~sksim.sim_path` and the CV estimators.
    perturbation_eps : float, default=None
        The l_inf radius of the perturbations, in the units of X (e.g. 0.1
        for pixels in [0, 1]); required with ``perturbation``.
    perturbation_mix : {"both", "perturbed"}, default="both"
        ``"both"``: every sample enters the row problems twice, clean and
        perturbed, both against its clean targets (the clean accuracy is
        asked for too); ``"perturbed"``: only its perturbed copy.
    perturbation_range : tuple of (float, float), default=None
        ``(low, high)``: the perturbed inputs are clipped to this range (e.g.
        ``(0, 1)`` for pixels), as the attacks they stand for are.
"""

def estimator_doc(summary, attributes, examples):
    """An estimator's docstring: its summary, the objective and parameters
    both share, its attributes and its examples."""
    return (f"{summary}{OBJECTIVE_DOC}\n    Parameters\n    ----------{PARAMETERS_DOC}"
            f"\n    Attributes\n    ----------{attributes}\n    Examples\n    --------"
            f"{examples}")


FIT_DOC = """Fit the implicit model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Model inputs ``U``. A ``numpy.memmap`` or ``dask.array`` (also for
            ``states`` and ``baseline_outputs``) is read chunk by chunk, never
            loaded; with a TorchBaseline teacher X may also be a re-iterable
            of ``(inputs, labels)`` batches such as a torch DataLoader (then
            ``y=None``). See "Out-of-core and distributed fits" in the README.
        {y}
        states : array-like of shape (n_samples, n_states), default=None
            Precomputed baseline pre-activations ``Z``; ``None`` takes them from
            ``baseline``.
        {baseline_outputs}

        Returns
        -------
        self : {name}
        """


def fit_doc(y, baseline_outputs, name):
    """``fit``'s docstring with the estimator's own ``y`` and
    ``baseline_outputs`` entries."""
    return FIT_DOC.format(y=y, baseline_outputs=baseline_outputs, name=name)

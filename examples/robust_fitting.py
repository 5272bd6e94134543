"""Robust fitting: what ``row_bound`` costs and buys
=================================================

``row_bound=R`` bounds the L1 norm of every row of ``[A B]`` and ``[C D]``
exactly, so the certified Lipschitz bound of the logits,
``lipschitz_bound_ = ||C|| ||B|| / (1 - ||A||) + ||D||`` (infinity norms), is
at most ``R**2 / (1 - kappa) + R``. This example fits the default
``SIMClassifier`` on scikit-learn's digits without a row bound and with a few
bounds and two values of ``kappa`` (one fit with ``alpha=0``: the pure
constrained form, sparse through the bounds alone) and prints the
test accuracy, the certified bounds and the model size of each. It takes a few
seconds once the numba kernels are compiled::

    python examples/robust_fitting.py

With ``alpha=0`` a row whose row bound is not active is an unpenalised
least-squares problem that no dual point certifies exactly, so such fits may
warn (the rows are still feasible); the warnings are counted, not shown.
"""

import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sksim import SIMClassifier

SETTINGS = [  # (alpha, kappa, row_bound)
    (1e-3, 0.95, None),
    (1e-3, 0.95, 50.0),
    (1e-3, 0.95, 20.0),
    (1e-3, 0.5, 20.0),
    (1e-3, 0.5, 5.0),
    (0.0, 0.5, 20.0),
]


def main():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    print(f"digits: {len(X_train)} train / {len(X_test)} test samples\n")
    header = ("alpha", "kappa", "row_bound", "test acc", "lipschitz_bound_", "R^2/(1-kappa)+R",
              "lipschitz_path_bound_", "nonzeros", "warnings")
    print("  ".join(f"{h:>{len(h)}}" for h in header))
    for alpha, kappa, row_bound in SETTINGS:
        model = SIMClassifier(alpha=alpha, kappa=kappa, row_bound=row_bound, random_state=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X_train, y_train)
        formula = "-" if row_bound is None else f"{row_bound**2 / (1 - kappa) + row_bound:.4g}"
        cells = (f"{alpha:g}", f"{kappa:g}", str(row_bound), f"{model.score(X_test, y_test):.4f}",
                 f"{model.lipschitz_bound_:.4g}", formula,
                 f"{model.lipschitz_path_bound_:.4g}", str(model.n_nonzero_),
                 str(sum(issubclass(w.category, ConvergenceWarning) for w in caught)))
        print("  ".join(f"{c:>{len(h)}}" for c, h in zip(cells, header)))


if __name__ == "__main__":
    main()

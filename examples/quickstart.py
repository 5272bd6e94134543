"""Quick start: distil a sparse, well-posed implicit model from an MLP on digits.
==============================================================================

Fits the default ``SIMClassifier`` on scikit-learn's digits. With no ``states``
given, ``fit`` first trains an embedded ReLU MLP teacher (kept in
``model.baseline_``), records its hidden pre-activations, and then solves one
convex problem per row of the implicit model

    x = relu(A x + B u + b_x),    y = C x + D u + b_y,    ||A||_inf <= kappa < 1.

Run from the repository root::

    python examples/quickstart.py

The first run compiles the numba kernels first (it says so on stderr, with
how long that takes); they are cached.
"""

import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sksim import SIMClassifier


def main():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, random_state=0, stratify=y
    )

    model = SIMClassifier(random_state=0)
    start = time.perf_counter()
    model.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - start

    teacher = model.baseline_
    teacher_accuracy = teacher.score(X_test, y_test)
    sim_accuracy = model.score(X_test, y_test)

    teacher_nonzero = sum(
        int(np.count_nonzero(p)) for p in teacher.coefs_ + teacher.intercepts_
    )
    sim_intercept_nonzero = int(
        np.count_nonzero(model.state_intercept_) + np.count_nonzero(model.intercept_)
    )
    sim_nonzero = model.n_nonzero_ + sim_intercept_nonzero
    a_norm = float(np.max(abs(model.A_).sum(axis=1), initial=0.0))

    hidden = "-".join(str(h) for h in teacher.hidden_layer_sizes)
    print(
        f"digits: {X_train.shape[0]} train / {X_test.shape[0]} test samples, "
        f"{X.shape[1]} features; teacher MLP {hidden} (ReLU), "
        f"SIM with {model.n_states_} states, alpha={model.alpha:g}, "
        f"kappa={model.kappa:g}"
    )
    print()
    rows = [
        ("test accuracy, teacher MLP", f"{teacher_accuracy:.4f}"),
        ("test accuracy, SIM", f"{sim_accuracy:.4f}"),
        ("nonzero params, teacher (coefs_ + intercepts_)", f"{teacher_nonzero}"),
        (
            "nonzero params, SIM (A,B,C,D + intercepts)",
            f"{sim_nonzero} = {model.n_nonzero_} + {sim_intercept_nonzero}",
        ),
        (
            "||A||_inf (max row sum |A_ij|)",
            f"{a_norm!r} {'<=' if a_norm <= model.kappa else '>'} kappa = {model.kappa:g}",
        ),
        ("Lipschitz bound (lipschitz_bound_)", f"{model.lipschitz_bound_:.4g}"),
        ("fit wall time (teacher + SIM)", f"{fit_seconds:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'quantity':<{width}}  value")
    print(f"{'-' * width}  {'-' * 28}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()

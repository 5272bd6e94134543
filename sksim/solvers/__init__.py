"""Numba kernels over plain contiguous arrays; no estimator objects here."""

# registers the listener that announces a first compile (before any kernel is compiled)
from ._first_use import announce_compilation
from .equilibrium import EquilibriumSolution, forward_substitution, solve_equilibrium
from .projection import enforce_l1_bound_inplace, project_l1_ball_inplace
from .rows import (
    RowSolution,
    auto_solver,
    resolve_n_threads,
    solve_rows,
    solve_rows_path,
    stack_rows,
)

__all__ = [
    "EquilibriumSolution",
    "RowSolution",
    "announce_compilation",
    "auto_solver",
    "enforce_l1_bound_inplace",
    "forward_substitution",
    "project_l1_ball_inplace",
    "resolve_n_threads",
    "solve_equilibrium",
    "solve_rows",
    "solve_rows_path",
    "stack_rows",
]

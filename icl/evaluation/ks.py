"""The numbers of in-context examples k shown in summary tables and periodic-evaluation logs."""

from __future__ import annotations


def interesting_ks(n_dims: int, n_points: int) -> list[int]:
    """k in {1, d/2, d, 2d, last} that a prompt of ``n_points`` points has (k < n_points): where
    least squares starts, halfway to, reaches and passes the input dimension d, and the end."""
    d, n = n_dims, n_points
    return sorted({1, max(1, d // 2), d, 2 * d, n - 1} & set(range(n)))

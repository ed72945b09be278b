"""The numbers of in-context examples k shown in summary tables (``table_ks``) and logged by
periodic evaluation (``interesting_ks``)."""

from __future__ import annotations


def interesting_ks(n_dims: int, n_points: int) -> list[int]:
    """k in {1, d/2, d, 2d, last} that a prompt of ``n_points`` points has (k < n_points): where
    least squares starts, halfway to, reaches and passes the input dimension d, and the end."""
    d, n = n_dims, n_points
    return sorted({1, max(1, d // 2), d, 2 * d, n - 1} & set(range(n)))


def table_ks(n_dims: int, n_points: int, extra: tuple[int, ...] = ()) -> list[int]:
    """Every k = 1..d (where sparse and dense models part ways, below d), then 3d/2, 2d and the last
    k, plus ``extra`` (e.g. the table k); only those a prompt of ``n_points`` points has."""
    d, n = n_dims, n_points
    return sorted((set(range(1, d + 1)) | {(3 * d) // 2, 2 * d, n - 1} | set(extra)) & set(range(n)))

"""Refuse outputs that silently lost rows compared with the previous good output.

An empty or truncated input does not crash a batch job: it produces a smaller, valid-looking
output that replaces last week's. Jobs therefore compare each output's row count with the
previous output's and fail, naming the table, when it dropped by more than
``max_row_drop_fraction`` (set it to 1 to accept any drop, e.g. after a planned purge).
"""

from __future__ import annotations

from lookalike.errors import DataValidationError


def check_row_drop(what: str, previous: float | None, current: float, max_fraction: float,
                   setting: str = "max_row_drop_fraction") -> None:
    """Raise :class:`DataValidationError` when ``current`` is more than ``max_fraction`` below
    ``previous`` (no previous output: nothing to compare, nothing raised)."""
    if not 0.0 <= max_fraction <= 1.0:
        raise DataValidationError(f"{setting} must lie in [0, 1], got {max_fraction}")
    if previous is None or previous <= 0:
        return
    drop = 1.0 - current / previous
    if drop > max_fraction:
        raise DataValidationError(
            f"{what}: {current:,.0f} rows, {drop:.0%} fewer than the previous output ({previous:,.0f}); "
            f"more than {setting}={max_fraction:g}, so the previous output is kept "
            f"(if the drop is expected, rerun with {setting}=1)"
        )

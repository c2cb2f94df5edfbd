"""Tests of annotation/consensus.py (Borda count with ties)."""

from __future__ import annotations

import pytest

from annotation.consensus import borda


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ([], None),
        ([[[1], [2], [3]]], [[1], [2], [3]]),
        ([[[1, 2], [3]]], [[1, 2], [3]]),
        ([[[1], [2], [3]], [[1], [3], [2]]], [[1], [2, 3]]),
        ([[[1], [2], [3]], [[2], [1], [3]], [[1], [2], [3]]], [[1], [2], [3]]),
        ([[[1], [2]], [[2], [1]]], [[1, 2]]),
        # 1 wins twice narrowly, 3 is loved once and hated twice: Borda totals 1:5, 2:3, 3:4
        ([[[1], [3], [2]], [[1], [2], [3]], [[3], [1], [2]]], [[1], [3], [2]]),
        ([[[2, 1], [3]], [[3], [1], [2]]], [[1], [3], [2]]),
    ],
)
def test_borda_orders_by_summed_points_and_ties_equal_totals(orders, expected):
    assert borda(orders) == expected

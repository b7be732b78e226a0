"""The reconciliation of decisions with the ingestion events that recorded them, on arrays,
names exactly what the plain walk over ids and runs names (the walk is kept here as the
definition)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from auditapp.decisions.verification import unreconciled


def walked(runs: list[tuple[int, int]], ids: list[int]) -> tuple[list[int], list[int]]:
    """One id at a time, the runs starting at or before it taken in order."""
    claimed_twice, unclaimed = [], []
    position, covered_until = 0, 0
    for decision_id in ids:
        while position < len(runs) and runs[position][0] <= decision_id:
            first, last = runs[position]
            if first <= covered_until:
                claimed_twice.append(first)
            covered_until = max(covered_until, last)
            position += 1
        if decision_id > covered_until:
            unclaimed.append(decision_id)
    return claimed_twice, unclaimed


RUN = st.tuples(st.integers(1, 60), st.integers(0, 8)).map(lambda r: (r[0], r[0] + r[1]))


@settings(max_examples=300, deadline=None)
@given(
    runs=st.lists(RUN, max_size=12).map(sorted),
    ids=st.sets(st.integers(1, 70), max_size=40).map(sorted),
)
def test_the_arrays_name_what_the_walk_names(runs, ids):
    assert unreconciled(runs, np.array(ids, dtype=np.int64)) == walked(runs, ids)


def test_a_decision_no_event_names_and_one_named_twice_are_found():
    runs = [(1, 10), (5, 6), (12, 20)]
    ids = np.array([*range(1, 11), 11, *range(12, 21)], dtype=np.int64)
    assert unreconciled(runs, ids) == ([5], [11])

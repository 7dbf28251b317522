"""The order a partition's results and clinical context are applied in, across fetches
(services/classifier/arrival.py): pure, no broker."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.classifier.arrival import HOLD_SECONDS, ArrivalOrder

RESULTS, CONTEXT = "lab.results.v1", "clinical.context.v1"


@dataclass(frozen=True)
class Written:
    name: str
    timestamp: int
    offset: int = 0


def names(records: list[Written]) -> list[str]:
    return [r.name for r in records]


def nothing_read_to_end(tp: tuple[str, int]) -> bool:
    return False


def released(
    order: ArrivalOrder[Written], partitions: list[int], read_to_end: Callable[[Any], bool]
) -> list[Written]:
    records, overdue = order.release(partitions, read_to_end, now=0.0, at_most=1000)
    assert overdue == []
    return records


def test_results_fetched_ahead_of_their_treatment_wait_for_it() -> None:
    """Measured: a worker catching up fetched a partition's counts before the first-line
    treatment charted between them, and paged 'no first-line therapy on record'."""
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add(
        {(RESULTS, 0): [Written("base", 1, 1), Written("day 7", 3, 2), Written("day 8", 4, 3)]}
    )
    assert released(order, [0], nothing_read_to_end) == []  # nothing known of the context yet
    order.add({(CONTEXT, 0): [Written("IVIG", 2, 4)]})
    assert names(released(order, [0], nothing_read_to_end)) == ["base", "IVIG"]
    assert order.held((RESULTS, 0)) == 2

    def context_read_to_end(tp: tuple[str, int]) -> bool:
        return tp == (CONTEXT, 0)

    assert names(released(order, [0], context_read_to_end)) == ["day 7", "day 8"]


def test_a_topic_read_to_its_end_holds_the_other_back_no_longer() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 1): [Written("count", 5, 5)]})
    assert names(released(order, [1], lambda tp: tp == (CONTEXT, 1))) == ["count"]


def test_partitions_are_lined_up_separately_each_topics_order_kept() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    # Two ingest replicas' clocks: the context partition's own order is not its times'.
    order.add(
        {
            (RESULTS, 0): [Written("r1", 10, 6), Written("r2", 30, 7)],
            (CONTEXT, 0): [Written("c1", 20, 8), Written("c2", 15, 9), Written("c3", 40, 10)],
            (RESULTS, 1): [Written("other", 50, 11)],
        }
    )
    applied = released(order, [0, 1], lambda tp: True)
    assert names(applied) == ["r1", "c1", "c2", "r2", "c3", "other"]


def test_at_equal_times_the_context_goes_first() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 0): [Written("count", 7, 12)], (CONTEXT, 0): [Written("dose", 7, 13)]})
    assert names(released(order, [0], nothing_read_to_end)) == ["dose", "count"]


def test_held_records_always_make_progress_when_both_topics_have_some() -> None:
    """However the times interleave, two non-empty topics release at least one record."""
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add(
        {
            (RESULTS, 0): [Written("r", 9, 14), Written("r-early", 1, 15)],
            (CONTEXT, 0): [Written("c", 8, 16)],
        }
    )
    assert names(released(order, [0], nothing_read_to_end)) == ["c"]
    assert names(released(order, [0], lambda tp: tp == (CONTEXT, 0))) == ["r", "r-early"]


def test_what_a_worker_gave_up_is_forgotten() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 2): [Written("count", 1, 17)]})
    order.forget([(RESULTS, 2), (CONTEXT, 2)])
    assert order.held((RESULTS, 2)) == 0
    assert released(order, [2], lambda tp: True) == []


def test_records_fetched_again_from_before_a_rebalance_are_not_held_twice() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 0): [Written("a", 1, 10), Written("b", 2, 11)]})
    order.add({(RESULTS, 0): [Written("b again", 2, 11), Written("c", 3, 12)]})
    assert names(released(order, [0], lambda tp: True)) == ["a", "b", "c"]


def test_a_partition_whose_other_topic_cannot_be_fetched_is_released_after_a_while() -> None:
    """A critical count is not held back without bound while the context partition's leader is
    down: after HOLD_SECONDS with nothing released it goes, and the partition is reported."""
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 3): [Written("critical count", 5, 1)]})
    assert order.release([3], nothing_read_to_end, now=100.0, at_most=10) == ([], [])
    assert order.release([3], nothing_read_to_end, now=100.0 + HOLD_SECONDS - 1, at_most=10) == (
        [],
        [],
    )
    records, overdue = order.release([3], nothing_read_to_end, now=100.0 + HOLD_SECONDS, at_most=10)
    assert names(records) == ["critical count"]
    assert overdue == [3]
    assert order.release([3], nothing_read_to_end, now=200.0, at_most=10) == ([], [])


def test_a_release_is_at_most_a_batch() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 0): [Written(f"r{n}", n, n) for n in range(5)]})
    order.add({(RESULTS, 1): [Written("other", 1, 1)]})
    first, _ = order.release([0, 1], lambda tp: True, now=0.0, at_most=3)
    assert names(first) == ["r0", "r1", "r2"]
    rest, _ = order.release([1, 0], lambda tp: True, now=0.0, at_most=3)
    assert names(rest) == ["other", "r3", "r4"]

"""The order a partition's results and clinical context are applied in, across fetches
(services/classifier/arrival.py): pure, no broker."""

from dataclasses import dataclass

from services.classifier.arrival import ArrivalOrder

RESULTS, CONTEXT = "lab.results.v1", "clinical.context.v1"


@dataclass(frozen=True)
class Written:
    name: str
    timestamp: int


def names(records: list[Written]) -> list[str]:
    return [r.name for r in records]


def nothing_read_to_end(tp: tuple[str, int]) -> bool:
    return False


def test_results_fetched_ahead_of_their_treatment_wait_for_it() -> None:
    """Measured: a worker catching up fetched a partition's counts before the first-line
    treatment charted between them, and paged 'no first-line therapy on record'."""
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 0): [Written("base", 1), Written("day 7", 3), Written("day 8", 4)]})
    assert order.release([0], nothing_read_to_end) == []  # nothing known of the context yet
    order.add({(CONTEXT, 0): [Written("IVIG", 2)]})
    assert names(order.release([0], nothing_read_to_end)) == ["base", "IVIG"]
    assert order.held((RESULTS, 0)) == 2

    def context_read_to_end(tp: tuple[str, int]) -> bool:
        return tp == (CONTEXT, 0)

    assert names(order.release([0], context_read_to_end)) == ["day 7", "day 8"]


def test_a_topic_read_to_its_end_holds_the_other_back_no_longer() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 1): [Written("count", 5)]})
    assert names(order.release([1], lambda tp: tp == (CONTEXT, 1))) == ["count"]


def test_partitions_are_lined_up_separately_each_topics_order_kept() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    # Two ingest replicas' clocks: the context partition's own order is not its times'.
    order.add(
        {
            (RESULTS, 0): [Written("r1", 10), Written("r2", 30)],
            (CONTEXT, 0): [Written("c1", 20), Written("c2", 15), Written("c3", 40)],
            (RESULTS, 1): [Written("other", 50)],
        }
    )
    released = order.release([0, 1], lambda tp: True)
    assert names(released) == ["r1", "c1", "c2", "r2", "c3", "other"]


def test_at_equal_times_the_context_goes_first() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 0): [Written("count", 7)], (CONTEXT, 0): [Written("dose", 7)]})
    assert names(order.release([0], nothing_read_to_end)) == ["dose", "count"]


def test_held_records_always_make_progress_when_both_topics_have_some() -> None:
    """However the times interleave, two non-empty topics release at least one record."""
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add(
        {(RESULTS, 0): [Written("r", 9), Written("r-early", 1)], (CONTEXT, 0): [Written("c", 8)]}
    )
    assert names(order.release([0], nothing_read_to_end)) == ["c"]
    assert names(order.release([0], lambda tp: tp == (CONTEXT, 0))) == ["r", "r-early"]


def test_what_a_worker_gave_up_is_forgotten() -> None:
    order = ArrivalOrder[Written](RESULTS, CONTEXT)
    order.add({(RESULTS, 2): [Written("count", 1)]})
    order.forget([(RESULTS, 2), (CONTEXT, 2)])
    assert order.held((RESULTS, 2)) == 0
    assert order.release([2], lambda tp: True) == []

"""The escalation chain against a real SQLite store and a real loopback webhook receiver:
paging each tier in turn, acks, "not my patient", failures, gaps, withdrawals and restarts."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

from prometheus_client import REGISTRY

from schemas import AckAction, DeliveryEvent, Patient, PatientIdentifier, PlateletAlert
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.notifier.delivery.attempts import AlertDelivery, RetryPolicy
from services.notifier.delivery.channels.base import Channel
from services.notifier.delivery.channels.pagerduty import PagerDutyChannel
from services.notifier.delivery.channels.webhook import WebhookChannel
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.delivery.escalator import Escalator
from services.notifier.domain.escalation import load_escalation_policy
from services.notifier.domain.links import verify_link
from services.notifier.domain.roster import parse_roster
from services.notifier.store.repository import NotifierStore
from tests.alert_factory import persistent_severe, refractory
from tests.pagerduty_server import PagerDutyEvents
from tests.test_engine import result

SECRET = b"test-link-secret"
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def roster_text(url: str) -> str:
    people = "\n".join(
        f"  {tier}: {{name: Dr {tier}, channel: webhook, address: '{url}/{tier}'}}"
        for tier in ("primary", "secondary", "attending", "supervisor")
    )
    shifts = "\n".join(
        f"  - {{service: {service}, tier: {tier}, person: {tier},"
        " start: 2000-01-01T00:00:00Z, end: 2100-01-01T00:00:00Z}"
        for service, tiers in (
            ("adult", ("primary", "secondary", "attending")),
            ("paediatric", ("primary",)),
        )
        for tier in tiers
    )
    return f"timezone: UTC\nfallback: supervisor\npeople:\n{people}\nshifts:\n{shifts}\n"


def escalator(
    store: NotifierStore,
    receiver: WebhookReceiver,
    events: list[DeliveryEvent],
    roster: str | None = None,
    channels: dict[str, Channel] | None = None,
) -> Escalator:
    async def publish(_: str, event: DeliveryEvent) -> None:
        events.append(event)

    delivery = AlertDelivery(
        store,
        {"webhook": WebhookChannel(timeout_seconds=5), **(channels or {})},
        RetryPolicy(attempts=2, base_seconds=0.01),
        publish,
    )
    return Escalator(
        store,
        delivery,
        parse_roster(roster or roster_text(receiver.url), {}),
        load_escalation_policy(),
        SECRET,
        "https://notifier.hospital.example",
        timedelta(hours=24),
        UTC,
    )


def critical(patient_born: date = date(1970, 5, 1), mrn: str = "42") -> PlateletAlert:
    patient = Patient(
        identifier=PatientIdentifier(authority="HOSP", mrn=mrn), birth_date=patient_born
    )
    return apply(History(), result(9, patient=patient), load_rules(), NOW)[0]


async def act(chain: Escalator, token: str, now: datetime) -> None:
    """What following a link from a page does, once the service has verified it."""
    claim = verify_link(SECRET, token, now)
    assert await chain.act(claim.alert_id, claim.action, claim.recipient, now)


def paged(receiver: WebhookReceiver) -> list[str]:
    return [page.path.rsplit("/", 1)[-1] for page in receiver.pages]


def link(receiver: WebhookReceiver, action: AckAction, page: int = -1) -> str:
    url = receiver.pages[page].body["actions"][action.value]
    return str(url).rsplit("/", 1)[-1]


async def test_a_critical_alert_pages_the_primary_at_once_with_signed_links(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    alert = critical()
    await escalator(store, webhook_receiver, []).receive(alert, NOW)
    assert paged(webhook_receiver) == ["primary"]
    (page,) = webhook_receiver.pages
    assert "Acknowledge: https://notifier.hospital.example/v1/links/" in page.body["summary"]
    claim = verify_link(SECRET, link(webhook_receiver, AckAction.ACKNOWLEDGE), NOW)
    assert (claim.alert_id, claim.recipient) == (alert.alert_id, "adult/primary")


async def test_unacknowledged_it_climbs_the_chain_then_reaches_the_fallback(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    events: list[DeliveryEvent] = []
    chain = escalator(store, webhook_receiver, events)
    await chain.receive(critical(), NOW)
    assert await chain.fire_due(NOW + 9 * MINUTE) == 0
    for minutes, expected in ((10, "secondary"), (20, "attending"), (30, "supervisor")):
        assert await chain.fire_due(NOW + minutes * MINUTE) == 1
        assert paged(webhook_receiver)[-1] == expected
    assert await chain.fire_due(NOW + 600 * MINUTE) == 0
    assert paged(webhook_receiver) == ["primary", "secondary", "attending", "supervisor"]
    assert [e.recipient for e in events if e.step == "escalated"] == [
        "adult/secondary",
        "adult/attending",
        "fallback",
    ]


async def test_a_correction_that_keeps_the_alert_pages_the_next_level_with_the_new_value(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    alert = critical()
    corrected = PlateletAlert.model_validate(
        {**alert.model_dump(), "event_id": "corrected-event", "value_10e9_per_l": 7}
    )
    await chain.receive(alert, NOW)
    await chain.receive(corrected, NOW + MINUTE)
    assert paged(webhook_receiver) == ["primary"]  # not paged again for the same alert
    await chain.fire_due(NOW + 10 * MINUTE)
    assert [p.body["alert"]["value_10e9_per_l"] for p in webhook_receiver.pages] == [9, 7]
    (first_level, *_) = await store.escalation(alert.alert_id)  # what the alert page shows
    assert PlateletAlert.model_validate_json(first_level.alert).value_10e9_per_l == 7


async def test_an_acknowledgement_stops_the_escalation(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    events: list[DeliveryEvent] = []
    chain = escalator(store, webhook_receiver, events)
    alert = critical()
    await chain.receive(alert, NOW)
    await act(chain, link(webhook_receiver, AckAction.ACKNOWLEDGE), NOW)
    assert await chain.fire_due(NOW + 600 * MINUTE) == 0
    assert paged(webhook_receiver) == ["primary"]
    assert [row.step for row in await store.audit_trail(alert.alert_id)][-1] == "acked"
    assert {row.state for row in await store.escalation(alert.alert_id)} == {"paged", "cancelled"}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_open_alerts_and_time_to_acknowledge_are_measured(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    acked_before = _sample(
        "plateletwatch_notifier_page_to_ack_seconds_count", alert_kind="critical_low"
    )
    await chain.receive(critical(), NOW)
    await chain.escalation_round(NOW)
    assert _sample("plateletwatch_notifier_unacknowledged_alerts") == 1
    assert _sample("plateletwatch_notifier_alerts_past_final_escalation") == 0
    await chain.escalation_round(NOW + 30 * MINUTE)  # everyone paged, the fallback included
    await chain.escalation_round(NOW + 31 * MINUTE)
    assert _sample("plateletwatch_notifier_alerts_past_final_escalation") == 1
    await act(chain, link(webhook_receiver, AckAction.ACKNOWLEDGE), NOW + 32 * MINUTE)
    await chain.escalation_round(NOW + 33 * MINUTE)
    assert _sample("plateletwatch_notifier_unacknowledged_alerts") == 0
    assert _sample("plateletwatch_notifier_alerts_past_final_escalation") == 0
    acked = _sample("plateletwatch_notifier_page_to_ack_seconds_count", alert_kind="critical_low")
    assert acked == acked_before + 1


async def test_acting_on_an_alert_never_paged_changes_nothing(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    assert not await chain.act("no-such-alert", AckAction.ACKNOWLEDGE, "adult/primary", NOW)


async def test_not_my_patient_pages_the_next_tier_now(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    await chain.receive(critical(), NOW)
    await act(chain, link(webhook_receiver, AckAction.NOT_MY_PATIENT), NOW + MINUTE)
    assert paged(webhook_receiver) == ["primary", "secondary"]
    # The secondary was paged early; the attending keeps its time.
    assert await chain.fire_due(NOW + 19 * MINUTE) == 0
    assert await chain.fire_due(NOW + 20 * MINUTE) == 1


async def test_a_page_that_cannot_be_delivered_escalates_without_waiting(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.refuse_next(1, status=400)  # the primary's pager refuses the page
    chain = escalator(store, webhook_receiver, [])
    await chain.receive(critical(), NOW)
    assert await chain.fire_due(NOW + MINUTE) == 1
    assert paged(webhook_receiver) == ["secondary"]


async def test_a_patient_on_a_ward_with_its_own_rota_pages_that_wards_doctor(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    bmt = (
        "  - {service: adult, tier: primary, person: attending, wards: [BMT],"
        " start: 2000-01-01T00:00:00Z, end: 2100-01-01T00:00:00Z}\n"
    )
    chain = escalator(store, webhook_receiver, [], roster_text(webhook_receiver.url) + bmt)
    await chain.receive(critical().model_copy(update={"location": "BMT"}), NOW)
    await chain.receive(critical(mrn="43").model_copy(update={"location": "ED"}), NOW)
    assert paged(webhook_receiver) == ["attending", "primary"]


async def test_a_roster_gap_pages_the_fallback_and_is_recorded(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    events: list[DeliveryEvent] = []
    chain = escalator(store, webhook_receiver, events)
    child = critical(patient_born=date(2020, 1, 1))
    assert child.population == "paediatric"
    await chain.receive(child, NOW)
    await chain.fire_due(NOW + 10 * MINUTE)  # nobody holds paediatric secondary
    assert paged(webhook_receiver) == ["primary", "supervisor"]
    summary = webhook_receiver.pages[-1].body["summary"]
    assert summary.startswith("[nobody held paediatric secondary] CRITICAL LOW platelets")
    gaps = [e for e in events if e.step == "roster_gap"]
    assert [(e.recipient, e.detail) for e in gaps] == [
        ("fallback", "nobody held paediatric secondary")
    ]


async def test_a_withdrawal_cancels_the_chain_and_tells_whoever_was_paged(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    alert = critical()
    await chain.receive(alert, NOW)
    await chain.fire_due(NOW + 10 * MINUTE)
    withdrawal = PlateletAlert.model_validate(
        {
            **alert.model_dump(),
            "event_id": "withdrawal-event",
            "alert_id": "withdrawal-of-" + alert.alert_id,
            "kind": "withdrawn",
            "value_10e9_per_l": None,
            "withdraws_alert_id": alert.alert_id,
            "withdrawal_reason": "result R@0 was corrected to 140 x10^9/L",
        }
    )
    await chain.receive(withdrawal, NOW + 11 * MINUTE)
    assert await chain.fire_due(NOW + 600 * MINUTE) == 0
    told = [p for p in webhook_receiver.pages if p.body["alert"]["kind"] == "withdrawn"]
    assert sorted(p.path.rsplit("/", 1)[-1] for p in told) == ["primary", "secondary"]


async def test_timers_survive_a_restart_and_fire_once_across_replicas(
    notifier_database_url: str, webhook_receiver: WebhookReceiver
) -> None:
    url = notifier_database_url
    first = NotifierStore(url)
    await first.start()
    await escalator(first, webhook_receiver, []).receive(critical(), NOW)
    await first.stop()  # the notifier dies; its timers are rows

    stores = [NotifierStore(url), NotifierStore(url)]  # restarted, and a second replica
    for store in stores:
        await store.start()
    try:
        replicas = [escalator(store, webhook_receiver, []) for store in stores]
        fired = [await replica.fire_due(NOW + 10 * MINUTE) for replica in replicas]
        assert sorted(fired) == [0, 1]
        assert paged(webhook_receiver) == ["primary", "secondary"]
    finally:
        for store in stores:
            await store.stop()


ROUTING_KEY = "R0UT1NGKEY0F32CHARACTERSXXXXXXXX"


async def test_pagerduty_incidents_follow_the_alert(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    """Triggered with the alert id as dedup_key, acknowledged when the page is acknowledged here,
    and resolved when an alert is withdrawn."""
    with primary_on_pagerduty(store, webhook_receiver) as (chain, pagerduty):
        first, second = critical(), critical(mrn="43")
        await chain.receive(first, NOW)
        (trigger,) = pagerduty.events
        assert (trigger["event_action"], trigger["dedup_key"]) == ("trigger", first.alert_id)
        assert trigger["payload"]["severity"] == "critical"
        assert "CRITICAL LOW platelets" in trigger["payload"]["summary"]
        assert [link["text"] for link in trigger["links"]] == [
            "Acknowledge",
            "Not my patient",
            "Resolve",
        ]
        ack = trigger["links"][0]["href"].rsplit("/", 1)[-1]
        await act(chain, ack, NOW + MINUTE)
        assert pagerduty.incidents == {first.alert_id: "acknowledged"}

        await chain.receive(second, NOW)
        await chain.receive(_withdrawal_of(second), NOW + MINUTE)
        assert pagerduty.incidents[second.alert_id] == "resolved"
        assert webhook_receiver.pages == []  # the primary is paged on PagerDuty only


@contextmanager
def primary_on_pagerduty(
    store: NotifierStore, receiver: WebhookReceiver
) -> Iterator[tuple[Escalator, PagerDutyEvents]]:
    """The chain with the primary on PagerDuty (a loopback Events API), the others on webhooks."""
    pagerduty = PagerDutyEvents()
    pagerduty.start()
    try:
        roster = roster_text(receiver.url).replace(
            f"channel: webhook, address: '{receiver.url}/primary'",
            f"channel: pagerduty, address: {ROUTING_KEY}",
        )
        channels: dict[str, Channel] = {"pagerduty": PagerDutyChannel(5, pagerduty.url)}
        yield escalator(store, receiver, [], roster, channels), pagerduty
    finally:
        pagerduty.stop()


def _withdrawal_of(alert: PlateletAlert) -> PlateletAlert:
    return PlateletAlert.model_validate(
        {
            **alert.model_dump(),
            "event_id": "withdrawal-of-" + alert.event_id,
            "alert_id": "withdrawal-of-" + alert.alert_id,
            "kind": "withdrawn",
            "value_10e9_per_l": None,
            "withdraws_alert_id": alert.alert_id,
            "withdrawal_reason": "result R@0 was entered in error and deleted",
        }
    )


def two_services(url: str) -> str:
    """The roster above, with the paediatric primary held by another person: the attending."""
    return roster_text(url).replace(
        "{service: paediatric, tier: primary, person: primary",
        "{service: paediatric, tier: primary, person: attending",
    )


async def test_not_my_patient_can_hand_the_alert_to_the_other_services_on_call(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [], roster=two_services(webhook_receiver.url))
    alert = critical()  # an adult: the adult primary is paged
    await chain.receive(alert, NOW)
    handed = await chain.act(
        alert.alert_id, AckAction.NOT_MY_PATIENT, "adult/primary", NOW + MINUTE, "paediatric"
    )
    assert handed
    assert paged(webhook_receiver) == ["primary", "attending"]  # the paediatric primary, now
    assert await store.reassigned_to(alert.alert_id) == "paediatric"
    # The paediatric chain carries on from there: nobody holds its secondary, so the fallback.
    assert await chain.fire_due(NOW + 10 * MINUTE) == 0
    assert await chain.fire_due(NOW + 11 * MINUTE) == 1
    assert paged(webhook_receiver)[-1] == "supervisor"
    trail = [(row.step, row.detail) for row in await store.audit_trail(alert.alert_id)]
    assert ("declined", "reassigned to paediatric on call") in trail
    assert ("roster_gap", "nobody held paediatric secondary") in trail


async def test_an_alert_whose_paging_ended_is_not_handed_over(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [], roster=two_services(webhook_receiver.url))
    alert = critical()
    await chain.receive(alert, NOW)
    assert await chain.act(alert.alert_id, AckAction.ACKNOWLEDGE, "adult/primary", NOW + MINUTE)
    later = NOW + 2 * MINUTE
    assert await chain.act(alert.alert_id, AckAction.NOT_MY_PATIENT, "x", later, "paediatric")
    assert paged(webhook_receiver) == ["primary"]
    assert await store.reassigned_to(alert.alert_id) is None
    trail = [(row.step, row.detail) for row in await store.audit_trail(alert.alert_id)]
    assert trail[-1] == ("declined", "not passed to paediatric on call: paging had ended")


WEEKDAY = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # business hours: persistent_severe pages


async def test_a_refractory_alert_supersedes_the_persistent_severe_one_quietly(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    """The newer alert pages as usual; the older one's chain stops, its paging is closed as
    superseded (never withdrawn) and nobody is told it was wrong, for it was not."""
    events: list[DeliveryEvent] = []
    chain = escalator(store, webhook_receiver, events)
    older = persistent_severe()
    newer = refractory(supersedes=older.alert_id)
    await chain.receive(older, WEEKDAY)
    await chain.receive(newer, WEEKDAY + 30 * MINUTE)
    pages = [
        (p.body["alert"]["alert_id"], p.path.rsplit("/", 1)[-1]) for p in webhook_receiver.pages
    ]
    assert pages == [(older.alert_id, "primary"), (newer.alert_id, "primary")]
    closure = await store.closure(older.alert_id)
    assert closure is not None
    assert (closure.how, closure.by) == ("superseded", "classifier")
    assert {row.state for row in await store.escalation(older.alert_id)} == {"paged", "cancelled"}
    assert await store.closure(newer.alert_id) is None
    (noted,) = [row for row in await store.audit_trail(older.alert_id) if row.step == "superseded"]
    assert noted.detail == f"superseded by the refractory alert {newer.alert_id}"
    assert [e.step for e in events if e.alert_id == older.alert_id][-1] == "superseded"
    assert not [e for e in events if e.step == "withdrawn"]
    await chain.fire_due(WEEKDAY + 600 * MINUTE)  # only the refractory chain goes on
    assert {p.body["alert"]["alert_id"] for p in webhook_receiver.pages[2:]} == {newer.alert_id}
    assert not [p for p in webhook_receiver.pages if p.body["alert"]["kind"] == "withdrawn"]


async def test_a_superseding_alert_delivered_twice_pages_and_is_noted_once(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    older = persistent_severe()
    newer = refractory(supersedes=older.alert_id)
    await chain.receive(older, WEEKDAY)
    await chain.receive(newer, WEEKDAY + MINUTE)
    await chain.receive(newer, WEEKDAY + 2 * MINUTE)  # redelivered after a restart
    assert len(webhook_receiver.pages) == 2
    steps = [row.step for row in await store.audit_trail(older.alert_id)]
    assert steps.count("superseded") == 1
    closure = await store.closure(older.alert_id)
    assert closure is not None
    assert closure.closed_at.replace(tzinfo=UTC) == WEEKDAY + MINUTE


async def test_an_acknowledged_alert_keeps_its_closure_when_superseded(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    older = persistent_severe()
    await chain.receive(older, WEEKDAY)
    assert await chain.act(older.alert_id, AckAction.ACKNOWLEDGE, "dr.ada", WEEKDAY + MINUTE)
    await chain.receive(refractory(supersedes=older.alert_id), WEEKDAY + 60 * MINUTE)
    closure = await store.closure(older.alert_id)
    assert closure is not None
    assert (closure.how, closure.by) == ("acknowledge", "dr.ada")
    steps = [row.step for row in await store.audit_trail(older.alert_id)]
    assert steps[-2:] == ["acked", "superseded"]


async def test_superseding_an_alert_never_paged_here_pages_the_new_one_only(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    chain = escalator(store, webhook_receiver, [])
    await chain.receive(refractory(supersedes="unknown-alert"), WEEKDAY)
    assert len(webhook_receiver.pages) == 1
    assert await store.closure("unknown-alert") is None


async def test_a_superseded_pagerduty_incident_is_resolved(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    """PagerDuty would otherwise keep escalating the older incident on its own."""
    with primary_on_pagerduty(store, webhook_receiver) as (chain, pagerduty):
        older = persistent_severe()
        newer = refractory(supersedes=older.alert_id)
        await chain.receive(older, WEEKDAY)
        await chain.receive(newer, WEEKDAY + MINUTE)
        assert pagerduty.incidents == {older.alert_id: "resolved", newer.alert_id: "triggered"}

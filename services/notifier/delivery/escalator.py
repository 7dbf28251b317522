"""The escalation loop: open an alert's chain, page each level when it falls due, stop on an ack.

A new alert stores its whole chain as timed rows (escalation.schedule) and fires what is due at
once; a timer fires the rest. Each level pages whoever holds that tier on the roster at that
moment; a gap pages the fallback and is recorded as such. A page that cannot be delivered, or a
"not my patient", brings the next level forward rather than waiting out the window. An ack or a
resolve cancels what is left; a withdrawn alert also cancels, and tells everyone who was paged.
An alert that supersedes an earlier one (refractory after persistent-severe) pages as usual and
quietly closes the earlier one's paging as superseded: nobody is told it was wrong.

Alerts come in batches (what the consumer has fetched): their chains are stored together and
the levels due in a round are claimed, paged (AlertDelivery.page_many: concurrently) and marked
paged together, so the store group-commits their steps and a slow recipient delays only its own
page. A withdrawal or a superseding alert is handled alone, in its place in the batch.
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from typing import cast

from prometheus_client import Counter, Gauge, Histogram

from schemas import AckAction, AlertKind, DeliveryStep, PlateletAlert, Population
from services.notifier.clock import Clock, utc_now
from services.notifier.delivery.attempts import AlertDelivery, Page, Recipient
from services.notifier.domain.escalation import EscalationPolicy, schedule
from services.notifier.domain.links import sign_link
from services.notifier.domain.message import render_message
from services.notifier.domain.roster import Roster, Tier
from services.notifier.store.repository import EscalationRecord, NotifierStore
from services.notifier.store.tables import Closing, LevelState

log = logging.getLogger(__name__)

ESCALATIONS = Counter(
    "plateletwatch_notifier_escalations_total",
    "Pages sent beyond the first level of an alert's chain, by alert kind.",
    ["alert_kind"],
)
ROSTER_GAPS = Counter(
    "plateletwatch_notifier_roster_gaps_total",
    "Pages routed to the fallback because nobody held the tier on the roster.",
    ["tier"],
)
UNACKNOWLEDGED = Gauge(
    "plateletwatch_notifier_unacknowledged_alerts",
    "Alerts paged and not yet acknowledged, resolved or withdrawn (all replicas: from the store).",
)
PAST_FINAL_ESCALATION = Gauge(
    "plateletwatch_notifier_alerts_past_final_escalation",
    "Unacknowledged alerts whose whole chain, fallback included, has been paged.",
)
PAGE_TO_ACK = Histogram(
    "plateletwatch_notifier_page_to_ack_seconds",
    "Seconds from an alert's first delivered page to its acknowledgement.",
    ["alert_kind"],
    buckets=(30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400, 28800),
)
SUPERSEDED_ALERTS = Counter(
    "plateletwatch_notifier_superseded_alerts_total",
    "Alerts whose paging a newer alert took over (closed as superseded), by the older's kind.",
    ["alert_kind"],
)
ACTIONS = Counter(
    "plateletwatch_notifier_actions_total",
    "Acknowledge, not-my-patient and resolve actions taken, by action.",
    ["action"],
)


class Escalator:
    def __init__(
        self,
        store: NotifierStore,
        delivery: AlertDelivery,
        roster: Roster,
        policy: EscalationPolicy,
        link_secret: bytes,
        link_base_url: str,
        link_valid_for: timedelta,
        zone: tzinfo,
        clock: Clock = utc_now,
    ) -> None:
        """`zone` is the deployment's (PLATELETWATCH_LOCAL_TIMEZONE): messages show times in it;
        `clock` times the escalation rounds of `run`."""
        self._store = store
        self._delivery = delivery
        self._roster = roster
        self._policy = policy
        self._secret = link_secret
        self._base_url = link_base_url.rstrip("/")
        self._valid_for = link_valid_for
        self._zone = zone
        self._clock = clock

    async def receive_many(self, alerts: Sequence[PlateletAlert], now: datetime) -> None:
        """`receive` for a batch of alerts, in order: the plain new (or re-emitted) alerts
        between two withdrawals or superseding alerts have their chains stored together and
        then one round fires what is due. Idempotent as `receive`; raises if any alert failed
        (the whole batch may then be received again)."""
        opening: list[PlateletAlert] = []
        for alert in alerts:
            if alert.kind is AlertKind.WITHDRAWN or alert.supersedes_alert_id is not None:
                await self._open_all(opening, now)
                opening = []
                await self.receive(alert, now)
            else:
                opening.append(alert)
        await self._open_all(opening, now)

    async def _open_all(self, alerts: Sequence[PlateletAlert], now: datetime) -> None:
        if not alerts:
            return
        # Re-emitted with new evidence (a correction that still meets the rule), the stored
        # alert is replaced: the levels still to come page with it; their timing is unchanged.
        await self._store.open_escalations([self._chain(alert, now) for alert in alerts])
        await self.fire_due(now)

    def _chain(
        self, alert: PlateletAlert, now: datetime
    ) -> tuple[str, str, list[tuple[int, str, datetime]]]:
        steps: list[tuple[int, str, datetime]] = [
            (d.level, d.tier, d.at) for d in schedule(self._policy, alert.kind, now)
        ]
        return alert.alert_id, alert.model_dump_json(), steps

    async def receive(self, alert: PlateletAlert, now: datetime) -> None:
        """Start paging for a new alert, refresh a re-emitted one, or withdraw one; close the
        paging of the alert a new one supersedes. Idempotent: a redelivered alert pages, and
        notes the supersession, once."""
        if alert.kind is AlertKind.WITHDRAWN:
            await self._withdraw(alert, now)
            return
        await self._store.open_escalations([self._chain(alert, now)])
        if alert.supersedes_alert_id is not None:
            await self._supersede(alert.supersedes_alert_id, alert, now)
        await self.fire_due(now)

    async def fire_due(self, now: datetime) -> int:
        """Message every level now due, all together; the number paged. Every level is tried
        even when one fails; then the first failure is raised (the levels that failed stay
        claimed and fire again once their lease lapses)."""
        due = await self._store.claim_due_escalations(now)
        if not due:
            return 0
        handed = await self._store.reassignments([step.alert_id for step in due])
        pages = await asyncio.gather(
            *(self._page_for(step, handed.get(step.alert_id), now) for step in due),
            return_exceptions=True,
        )
        ready = [
            (step, page) for step, page in zip(due, pages, strict=True) if isinstance(page, Page)
        ]
        outcomes = await self._delivery.page_many([page for _, page in ready])
        fired = [
            (step, outcome)
            for (step, _), outcome in zip(ready, outcomes, strict=True)
            if isinstance(outcome, bool)
        ]
        # Undelivered, the next level is due now: no waiting out the window for a message that
        # never arrived.
        await self._store.finish_escalation_steps(fired, now)
        for failure in [*pages, *outcomes]:
            if isinstance(failure, BaseException):
                raise failure
        return len(due)

    async def escalation_round(self, now: datetime) -> int:
        """Fire what is due, then count the open alerts (all replicas', from the store) into
        the gauges: once a round, not once an alert. The number paged."""
        paged = await self.fire_due(now)
        unacknowledged, exhausted = await self._store.open_alerts()
        UNACKNOWLEDGED.set(unacknowledged)
        PAST_FINAL_ESCALATION.set(exhausted)
        return paged

    async def act(
        self,
        alert_id: str,
        action: AckAction,
        by: str,
        now: datetime,
        reassign_to: Population | None = None,
    ) -> bool:
        """Acknowledge, decline ("not my patient") or resolve an alert on behalf of `by` (a
        roster role or a staff id, never a patient); False if no such alert was paged.

        Declined, the chain moves on to its next level, or with `reassign_to` starts afresh
        with that service's on-call (an adult hematologist paged for a child, say)."""
        steps = await self._store.escalation(alert_id)
        if not steps:
            return False
        ACTIONS.labels(action=action.value).inc()
        alert = PlateletAlert.model_validate_json(steps[0].alert)
        who = Recipient(by, "action", "")
        if action is AckAction.NOT_MY_PATIENT and reassign_to is not None:
            if await self._store.closure(alert_id) is not None:  # nobody is paged again
                detail = f"not passed to {reassign_to} on call: paging had ended"
                await self._delivery.record(alert, DeliveryStep.DECLINED, who, detail)
                return True
            detail = f"reassigned to {reassign_to} on call"
            await self._delivery.record(alert, DeliveryStep.DECLINED, who, detail)
            chain = [(d.tier, d.at) for d in schedule(self._policy, alert.kind, now)]
            await self._store.reassign(alert_id, reassign_to, by, chain, now)
            await self.fire_due(now)
            return True
        if action is AckAction.NOT_MY_PATIENT:
            await self._delivery.record(alert, DeliveryStep.DECLINED, who, None)
            pending = [s.level for s in steps if s.state is LevelState.PENDING]
            if pending:
                await self._store.bring_forward(alert_id, min(pending), now)
                await self.fire_due(now)
            return True
        if await self._store.close(alert_id, Closing(action.value), by, now):
            await self._time_to_ack(alert, action, now)
        step = DeliveryStep.ACKED if action is AckAction.ACKNOWLEDGE else DeliveryStep.RESOLVED
        await self._delivery.record(alert, step, who, None)
        await self._delivery.follow_up(alert, action, await self._store.paged_addresses(alert_id))
        return True

    async def run(self, interval_seconds: float) -> None:
        """Fire due levels until cancelled; a failing round is logged and retried."""
        while True:
            try:
                await self.escalation_round(self._clock())
            except Exception:
                log.exception("an escalation round failed; retrying")
            await asyncio.sleep(interval_seconds)

    async def _page_for(
        self, step: EscalationRecord, reassigned: str | None, now: datetime
    ) -> Page:
        """The message to the level's tier (of the service the alert was `reassigned` to, if it
        was); a roster gap and an escalation are recorded first."""
        alert = PlateletAlert.model_validate_json(step.alert)
        population = cast(Population, reassigned or alert.population or "adult")
        gap = False
        if step.tier == "fallback":
            person, role = self._roster.fallback, "fallback"
        else:
            tier = cast(Tier, step.tier)  # stored from a validated policy
            on_call = self._roster.on_call(population, tier, now, alert.location)
            person, gap = on_call.person, on_call.gap
            role = "fallback" if gap else f"{population}/{on_call.tier}"
        recipient = Recipient(role, person.channel, person.address)
        gap_note = f"nobody held {population} {step.tier}" if gap else ""
        if gap:
            ROSTER_GAPS.labels(tier=step.tier).inc()
            log.warning(
                "nobody holds %s %s on the roster: paging the fallback", population, step.tier
            )
            await self._delivery.record(alert, DeliveryStep.ROSTER_GAP, recipient, gap_note)
        if step.level > 0:
            ESCALATIONS.labels(alert_kind=alert.kind.value).inc()
            detail = f"level {step.level}: {step.tier}"
            await self._delivery.record(alert, DeliveryStep.ESCALATED, recipient, detail)
        links = self._links(alert.alert_id, role, now)
        message = render_message(alert, links, gap_note, zone=self._zone)
        return Page(alert, message, recipient)

    async def _withdraw(self, withdrawal: PlateletAlert, now: datetime) -> None:
        withdrawn = withdrawal.withdraws_alert_id or ""
        await self._store.close(withdrawn, Closing.WITHDRAWN, "classifier", now)
        chain = await self._store.escalation(withdrawn)
        if chain:  # the withdrawn alert's own timeline says so, and why
            original = PlateletAlert.model_validate_json(chain[0].alert)
            classifier = Recipient("classifier", "", "")
            reason = withdrawal.withdrawal_reason
            await self._delivery.record(original, DeliveryStep.WITHDRAWN, classifier, reason)
        message = render_message(withdrawal, zone=self._zone)
        for channel, address in await self._store.paged_addresses(withdrawn):
            await self._delivery.page(
                withdrawal, message, Recipient("paged earlier", channel, address)
            )

    async def _supersede(self, older_id: str, newer: PlateletAlert, now: datetime) -> None:
        """Stop the older alert's chain and close its paging as superseded, unless it had been
        closed already (acknowledged, resolved: that stays); its timeline notes it once. Its
        incidents (PagerDuty) are resolved, or they would escalate on their own."""
        chain = await self._store.escalation(older_id)
        if not chain:  # never paged here: nothing to close
            return
        older = PlateletAlert.model_validate_json(chain[0].alert)
        if await self._store.close(older_id, Closing.SUPERSEDED, "classifier", now):
            SUPERSEDED_ALERTS.labels(alert_kind=older.kind.value).inc()
            paged = await self._store.paged_addresses(older_id)
            await self._delivery.follow_up(older, AckAction.RESOLVE, paged)
        trail = await self._store.audit_trail(older_id)
        if any(row.step is DeliveryStep.SUPERSEDED for row in trail):
            return  # a redelivery of the newer alert
        detail = f"superseded by the {newer.kind.value} alert {newer.alert_id}"
        classifier = Recipient("classifier", "", "")
        await self._delivery.record(older, DeliveryStep.SUPERSEDED, classifier, detail)

    async def _time_to_ack(self, alert: PlateletAlert, action: AckAction, now: datetime) -> None:
        first_page = await self._store.first_delivery_at(alert.alert_id)
        if action is AckAction.ACKNOWLEDGE and first_page is not None:
            waited = max(0.0, (now - first_page).total_seconds())  # clocks of two replicas
            PAGE_TO_ACK.labels(alert_kind=alert.kind.value).observe(waited)

    def _links(self, alert_id: str, role: str, now: datetime) -> dict[AckAction, str]:
        return {
            action: f"{self._base_url}/v1/links/"
            + sign_link(self._secret, alert_id, action, role, now, self._valid_for)
            for action in AckAction
        }

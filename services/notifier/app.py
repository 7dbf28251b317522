"""The notifier process: consume platelet.alerts.v1, page through the escalation chain, and serve
the action links and the operations endpoints.

Alerts are taken in batches, as many as the consumer has fetched (at most ALERT_BATCH): their
chains are stored together and their first levels paged concurrently. Offsets are committed only
after every alert of the batch has its chain stored and its first level fired, so an alert is
never skipped; a redelivered alert is recognised by the store and not paged twice. A batch that
fails is taken again one alert at a time, each retried until its chain is stored, so the alerts
beside a failing one are paged and committed; a level whose page failed stays claimed and is
fired by the escalation loop once its claim lapses. The chain's later levels are timed rows in
the store, fired by that loop, which survives restarts.
"""

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from aiokafka import AIOKafkaConsumer
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import AckAction, DeliveryEvent, PlateletAlert, Topic
from services.config import Settings
from services.kafka.lag import consumer_lag
from services.kafka.producer import EventPublisher
from services.notifier.clock import Clock, utc_now
from services.notifier.delivery.attempts import AlertDelivery, RetryPolicy
from services.notifier.delivery.channels.registry import channels_from
from services.notifier.delivery.escalator import Escalator
from services.notifier.domain.escalation import load_escalation_policy
from services.notifier.domain.roster import Person, Roster, RosterError, load_roster
from services.notifier.store.repository import NotifierStore
from services.notifier.web.auth import load_console_users
from services.notifier.web.routes import console_router, link_router
from services.web import (
    answer_validation_errors_without_inputs,
    api_docs_urls,
    bearer_token_check,
    operations_router,
)

log = logging.getLogger(__name__)

ALERTS_CONSUMED = Counter(
    "plateletwatch_notifier_alerts_consumed_total",
    "Alert events read from platelet.alerts.v1, by outcome.",
    ["outcome"],
)
LAG = Gauge(
    "plateletwatch_notifier_consumer_lag",
    "Alert events not yet handled on each partition: the broker's log-end offset minus the "
    "notifier group's committed offset, polled every few seconds.",
    ["partition"],
)
_RETRY_AFTER_FAILURE_SECONDS = 5.0
ALERT_BATCH = 500  # records taken from the consumer at once
_FETCH_WAIT_MS = 1000  # getmany returns at once when records are there; this is the idle wait
LAG_POLL_SECONDS = 5.0


async def watch_lag(consumer: AIOKafkaConsumer, interval_seconds: float) -> None:
    """Set the lag gauge of the consumer's partitions from the broker every `interval_seconds`
    until cancelled: it grows while the consumer is stuck (retrying one alert, say), unlike the
    high-water mark of its last fetch. A failed poll is logged; the gauge keeps its last value."""
    while True:
        try:
            for (_, partition), waiting in (
                await consumer_lag(consumer, consumer.assignment())
            ).items():
                LAG.labels(partition=str(partition)).set(waiting)
        except Exception as error:
            log.warning("consumer lag could not be read from the broker: %r", error)
        await asyncio.sleep(interval_seconds)


def roster_from(settings: Settings) -> Roster:
    """The configured roster; without one, the configured webhook holds every tier."""
    if settings.notifier_roster_file is not None:
        return load_roster(settings.notifier_roster_file)
    if settings.notifier_webhook_url is None:
        raise RosterError("neither a roster file nor a webhook URL is configured")
    pager = Person(
        id="on-call",
        name="Hematology on call",
        channel="webhook",
        address=str(settings.notifier_webhook_url),
    )
    return Roster.everyone_to(pager)


def _keys(settings: Settings) -> tuple[list[bytes], list[bytes]]:
    """The link and session keys, each list's signing key first. They sign under different
    salts, so a link never passes for a session nor a session for a link; still, a key
    configured for both is refused (ValueError): one key per purpose."""
    link = _key(settings.notifier_link_keys, "LINK_SECRET", "action links")
    session = _key(settings.notifier_session_keys, "SESSION_SECRET", "console sessions")
    if set(link) & set(session):
        raise ValueError(
            "PLATELETWATCH_NOTIFIER_SESSION_SECRET must differ from "
            "PLATELETWATCH_NOTIFIER_LINK_SECRET: one key per purpose"
        )
    return link, session


def _key(configured: list[bytes], setting: str, signs: str) -> list[bytes]:
    """The configured keys; none, a random one for this process, and what it signs dies with it."""
    if configured:
        return configured
    log.warning("no PLATELETWATCH_NOTIFIER_%s: %s die with this process", setting, signs)
    return [secrets.token_bytes(32)]


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: AckAction
    by: str = Field(min_length=1, max_length=100, description="A roster role or staff id.")


class AlertConsumer:
    def __init__(
        self, settings: Settings, bootstrap_servers: str, escalator: Escalator, clock: Clock
    ) -> None:
        self._settings = settings
        self._bootstrap_servers = bootstrap_servers
        self._escalator = escalator
        self._clock = clock
        self.started = False

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self._settings.topic(Topic.PLATELET_ALERTS),
            bootstrap_servers=self._bootstrap_servers,
            group_id=self._settings.group_id("notifier"),
            client_id="plateletwatch-notifier",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=round(self._settings.notifier_fetch_max_wait_seconds * 1000),
        )
        lag: asyncio.Task[None] | None = None
        try:
            await consumer.start()
            self.started = True
            lag = asyncio.create_task(watch_lag(consumer, LAG_POLL_SECONDS), name="consumer-lag")
            while True:
                fetched = await consumer.getmany(timeout_ms=_FETCH_WAIT_MS, max_records=ALERT_BATCH)
                if not fetched:
                    continue
                alerts = _decoded([record.value for batch in fetched.values() for record in batch])
                if not await self._receive_all(alerts):
                    for alert in alerts:
                        while not await self._receive(alert):  # noqa: ASYNC110 - a timed retry
                            await asyncio.sleep(_RETRY_AFTER_FAILURE_SECONDS)
                await consumer.commit(
                    {partition: batch[-1].offset + 1 for partition, batch in fetched.items()}
                )
        finally:
            self.started = False
            if lag is not None:
                lag.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lag
            await consumer.stop()

    async def _receive_all(self, alerts: list[PlateletAlert]) -> bool:
        """Handle a batch of alerts together; False if any failed (some may have been paged:
        taken again, they are not paged twice)."""
        try:
            await self._escalator.receive_many(alerts, self._clock())
        except Exception:
            log.exception("handling a batch of %d alerts failed; one at a time now", len(alerts))
            return False
        ALERTS_CONSUMED.labels(outcome="handled").inc(len(alerts))
        return True

    async def _receive(self, alert: PlateletAlert) -> bool:
        """Handle one alert; False means a transient failure and the same alert is tried again."""
        try:
            await self._escalator.receive(alert, self._clock())
        except Exception:
            ALERTS_CONSUMED.labels(outcome="retrying").inc()
            log.exception("handling alert %s failed; retrying", alert.alert_id)
            return False
        ALERTS_CONSUMED.labels(outcome="handled").inc()
        return True


def _decoded(raws: list[bytes | None]) -> list[PlateletAlert]:
    """The alerts among `raws`; an undecodable record is counted, logged without its content
    and skipped."""
    alerts = []
    for raw in raws:
        try:
            alerts.append(PlateletAlert.model_validate_json(raw or b""))
        except ValidationError as error:
            ALERTS_CONSUMED.labels(outcome="undecodable").inc()
            log.error("skipping an undecodable alert event: %d errors", error.error_count())
    return alerts


def _stop_process_if_failed(task: "asyncio.Task[None]") -> None:
    """A notifier that cannot consume alerts or fire escalations must not look alive: stop, so
    it is restarted."""
    if not task.cancelled() and task.exception() is not None:
        log.critical(
            "%s stopped: %r; shutting the notifier down", task.get_name(), task.exception()
        )
        os.kill(os.getpid(), signal.SIGTERM)


def create_app(settings: Settings, bootstrap_servers: str, clock: Clock = utc_now) -> FastAPI:
    """The notifier, composed: its store (migrated at start), channels, delivery, escalator and
    consumer, and its HTTP routes. `clock` is the one the escalator and delivery read."""
    store = NotifierStore(settings.notifier_database_url)
    publisher = EventPublisher(
        bootstrap_servers, "plateletwatch-notifier", settings.kafka_produce_timeout_seconds
    )
    channels = channels_from(settings)

    async def publish_delivery(patient_key: str, event: DeliveryEvent) -> None:
        await publisher.publish(settings.topic(Topic.NOTIFIER_DELIVERIES), patient_key, event)

    delivery = AlertDelivery(
        store,
        channels,
        RetryPolicy(settings.notifier_delivery_attempts, settings.notifier_retry_base_seconds),
        publish_delivery,
        clock,
    )
    link_keys, session_keys = _keys(settings)
    link_lifetime = timedelta(hours=settings.notifier_link_valid_hours)
    escalator = Escalator(
        store,
        delivery,
        roster_from(settings),
        load_escalation_policy(settings.notifier_escalation_file),
        link_keys[0],
        settings.notifier_public_url or f"http://{settings.bind_host}:{settings.notifier_port}",
        link_lifetime,
        settings.local_zone,
        clock,
    )
    consumer = AlertConsumer(settings, bootstrap_servers, escalator, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.start()
        await publisher.start()
        tasks = [
            asyncio.create_task(consumer.run(), name="alert-consumer"),
            asyncio.create_task(
                escalator.run(settings.notifier_escalation_interval_seconds), name="escalations"
            ),
        ]
        for task in tasks:
            task.add_done_callback(_stop_process_if_failed)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            try:
                await delivery.close()
            finally:  # the publisher flushes and the store closes even if a channel would not
                try:
                    await publisher.stop()
                finally:
                    await store.stop()

    app = FastAPI(
        title="PlateletWatch notifier", lifespan=lifespan, **api_docs_urls(settings.api_docs)
    )
    app.state.clock = clock  # the web routes' `now` (services/notifier/web/routes.py)
    answer_validation_errors_without_inputs(app)
    # A consumer that lost its broker retries quietly and would look ready: the publisher's
    # watch asks the broker every few seconds.
    app.include_router(
        operations_router("notifier", lambda: consumer.started and publisher.broker_reachable)
    )
    authorised = bearer_token_check(settings.notifier_api_tokens)
    users_file = settings.notifier_console_users_file
    if users_file is None:
        log.warning("no PLATELETWATCH_NOTIFIER_CONSOLE_USERS_FILE: nobody can use the console")
    app.include_router(
        console_router(
            store,
            escalator,
            load_console_users(users_file) if users_file is not None else {},
            session_keys,
            proxy_user_header=settings.notifier_console_proxy_user_header,
            session_lifetime=timedelta(hours=settings.notifier_console_session_hours),
            refresh_seconds=settings.notifier_console_refresh_seconds,
            secure_cookies=(settings.notifier_public_url or "").startswith("https:"),
            birth_date_shown=settings.notifier_show_birth_date,
            zone=settings.local_zone,
        )
    )

    app.include_router(
        link_router(
            store,
            escalator,
            link_keys,
            link_lifetime,
            birth_date_shown=settings.notifier_show_birth_date,
            zone=settings.local_zone,
        )
    )

    @app.post("/v1/alerts/{alert_id}/actions", dependencies=[Depends(authorised)])
    async def act_on_alert(alert_id: str, request: ActionRequest) -> JSONResponse:
        """The same actions for systems and consoles that authenticate with a bearer token."""
        if not await escalator.act(alert_id, request.action, request.by, clock()):
            return JSONResponse({"error": "no alert with that id was paged"}, status_code=404)
        return JSONResponse({"alert_id": alert_id, "action": request.action.value})

    return app

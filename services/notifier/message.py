"""What a page says: one line a clinician can act on, plus the full alert for machines. Pure."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas import AckAction, AlertKind, PlateletAlert

_HEADLINES = {
    AlertKind.CRITICAL_LOW: "CRITICAL LOW platelets",
    AlertKind.PERSISTENT_SEVERE: "Persistent severe thrombocytopenia",
    AlertKind.REFRACTORY: "Refractory thrombocytopenia",
    AlertKind.WITHDRAWN: "WITHDRAWN platelet alert",
}


@dataclass(frozen=True)
class Page:
    """A rendered page; `idempotency_key` (the alert_id) lets a receiver drop a resend.

    `line` says what happened; `summary` adds the acknowledge link, for one-line channels;
    `actions` are the signed links by action; `body` is the JSON a webhook receives."""

    idempotency_key: str
    alert_id: str
    kind: AlertKind
    withdraws_alert_id: str | None
    line: str
    summary: str
    actions: dict[str, str]
    body: dict[str, Any]


def _value_text(alert: PlateletAlert) -> str:
    trigger = alert.evidence.results[-1].count if alert.evidence.results else None
    if trigger is None:
        return f"{alert.value_10e9_per_l:g} x10^9/L"
    comparator = trigger.comparator or ""
    return (
        f"{comparator}{trigger.value_10e9_per_l:g} x10^9/L "
        f"(reported {trigger.original_value} {trigger.original_unit})"
    )


def _context(alert: PlateletAlert) -> str:
    """The trend of the values behind the alert, and the treatments already tried."""
    parts = []
    evidence = alert.evidence
    counts = [r.count for r in (*evidence.preceding, *evidence.results) if r.count is not None]
    if len(counts) > 1:
        parts.append("trend " + " -> ".join(f"{c.value_10e9_per_l:g}" for c in counts))
    names = list(dict.fromkeys(t.name for t in evidence.treatments))
    if names:
        parts.append("after " + ", ".join(names))
    return "".join(f"; {part}" for part in parts)


def render_page(
    alert: PlateletAlert, actions: Mapping[AckAction, str] | None = None, why_you: str = ""
) -> Page:
    """The page for an alert; `actions` are the signed links the recipient can act through;
    `why_you` tells a stand-in why the page came to them (a gap in the roster)."""
    headline = _HEADLINES[alert.kind]
    patient = alert.patient.identifier.key
    if alert.kind is AlertKind.WITHDRAWN:
        line = f"{headline} for patient {patient}: {alert.withdrawal_reason}"
    else:
        collected = alert.evidence.results[-1].collected_at if alert.evidence.results else None
        when = f", collected {collected.isoformat()}" if collected else ""
        line = f"{headline}: {_value_text(alert)} for patient {patient}{when}{_context(alert)}"
    if why_you:
        line = f"[{why_you}] {line}"
    links = {action.value: url for action, url in (actions or {}).items()}
    ack = links.get(AckAction.ACKNOWLEDGE.value)
    summary = f"{line}. Acknowledge: {ack}" if ack else line
    return Page(
        idempotency_key=alert.alert_id,
        alert_id=alert.alert_id,
        kind=alert.kind,
        withdraws_alert_id=alert.withdraws_alert_id,
        line=line,
        summary=summary,
        actions=links,
        body={"summary": summary, "actions": links, "alert": alert.model_dump(mode="json")},
    )

"""The classifier's rule engine: pure functions over a patient's state and one new result.

The faust worker and the offline replay both call `evaluate`; nothing here does I/O. Numbers come
from the versioned rules file, never from code.
"""

from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from schemas import (
    AlertKind,
    Evidence,
    EvidenceResult,
    LabResult,
    PlateletAlert,
    PlateletCount,
    ResultStatus,
    RuleRef,
    stable_event_id,
)

SEEN_EVENTS_KEPT = 512


class CriticalLowRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    below_10e9_per_l: float = Field(gt=0)
    paging_statuses: frozenset[ResultStatus]
    episode_closes_at_10e9_per_l: float = Field(gt=0)


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    critical_low: CriticalLowRule


def load_rules(path: Path | None = None) -> Rules:
    """Read a rules file; without a path, the defaults shipped beside this module."""
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else resources.files(__package__).joinpath("default_rules.yaml").read_text(encoding="utf-8")
    )
    return Rules.model_validate(yaml.safe_load(text))


class CriticalEpisode(BaseModel):
    """An open run of critical values for one patient, paged once."""

    alert_id: str
    lowest_paged_10e9_per_l: float
    last_paged_at: datetime
    suppressed_repeats: int = 0


class PatientState(BaseModel):
    """What the classifier remembers about one patient (stored in a faust table)."""

    seen_event_ids: list[str] = Field(default_factory=list)
    critical_episode: CriticalEpisode | None = None


@dataclass(frozen=True)
class Evaluation:
    state: PatientState
    alerts: tuple[PlateletAlert, ...] = ()
    duplicate: bool = False


def is_critical_low(count: PlateletCount, rule: CriticalLowRule) -> bool:
    """Below the limit; "<x" counts when x is at or under the limit, ">x" never does."""
    if count.comparator in (">", ">="):
        return False
    if count.comparator == "<":
        return count.value_10e9_per_l <= rule.below_10e9_per_l
    return count.value_10e9_per_l < rule.below_10e9_per_l


def closes_critical_episode(count: PlateletCount, rule: CriticalLowRule) -> bool:
    return count.comparator not in ("<", "<=") and (
        count.value_10e9_per_l >= rule.episode_closes_at_10e9_per_l
    )


def evidence_of(result: LabResult) -> EvidenceResult:
    return EvidenceResult(
        event_id=result.event_id,
        result_id=result.result_id,
        count=result.count,
        status=result.status,
        collected_at=result.collected_at,
        verified_at=result.verified_at,
    )


def critical_low_alert(
    result: LabResult, count: PlateletCount, rules: Rules, now: datetime
) -> PlateletAlert:
    """A critical-low alert whose id depends only on the patient and the result that opened it."""
    alert_id = stable_event_id(
        "alert", result.patient.identifier.key, AlertKind.CRITICAL_LOW, result.event_id
    )
    return PlateletAlert(
        event_id=stable_event_id("alert-event", alert_id, "raised"),
        alert_id=alert_id,
        kind=AlertKind.CRITICAL_LOW,
        patient=result.patient,
        value_10e9_per_l=count.value_10e9_per_l,
        result_verified_at=result.verified_at,
        evidence=Evidence(results=(evidence_of(result),)),
        rule=RuleRef(id="critical_low", version=rules.version),
        raised_at=now,
    )


def evaluate(state: PatientState, result: LabResult, rules: Rules, now: datetime) -> Evaluation:
    """Apply the rules to one new result. Idempotent: a result already seen changes nothing."""
    if result.event_id in state.seen_event_ids:
        return Evaluation(state, duplicate=True)
    seen = [*state.seen_event_ids, result.event_id][-SEEN_EVENTS_KEPT:]
    rule = rules.critical_low
    episode = state.critical_episode
    count = result.count
    if result.status not in rule.paging_statuses or count is None:
        return Evaluation(state.model_copy(update={"seen_event_ids": seen}))
    if closes_critical_episode(count, rule):
        episode = None
    elif is_critical_low(count, rule):
        if episode is None:
            alert = critical_low_alert(result, count, rules, now)
            episode = CriticalEpisode(
                alert_id=alert.alert_id,
                lowest_paged_10e9_per_l=count.value_10e9_per_l,
                last_paged_at=now,
            )
            return Evaluation(PatientState(seen_event_ids=seen, critical_episode=episode), (alert,))
        episode = episode.model_copy(update={"suppressed_repeats": episode.suppressed_repeats + 1})
    return Evaluation(PatientState(seen_event_ids=seen, critical_episode=episode))

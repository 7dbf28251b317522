"""When to page which tier: the escalation chain for each alert kind. Pure.

A critical value pages the primary on call at once; with no acknowledgement within the step's
window it goes to the secondary, then the attending, and last to the fallback (the lab
supervisor), as critical-result systems do. Kinds that are not emergencies (refractory,
persistent severe) can be held to business hours: raised at night, their first page goes out when
the working day starts, and their windows are longer. Every number lives in the policy file.
"""

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas import AlertKind
from services.config import load_yaml_model
from services.notifier.domain.roster import Tier
from services.timezones import ZoneName

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChainTier(_Entry):
    """A tier of the chain and how long it has to acknowledge before the next is paged."""

    tier: Tier
    ack_within_minutes: float = Field(gt=0)


class KindPolicy(_Entry):
    chain: tuple[ChainTier, ...] = Field(min_length=1)
    business_hours_only: bool = False


class BusinessHours(_Entry):
    days: frozenset[Weekday]
    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        if isinstance(value, int):  # YAML 1.1 reads an unquoted 18:00 as 1080 (base 60)
            raise ValueError("write times in quotes, e.g. '18:00'")
        return value

    @model_validator(mode="after")
    def _a_working_day(self) -> "BusinessHours":
        if not self.days or self.end <= self.start:
            raise ValueError("business hours need at least one day and an end after the start")
        return self


class EscalationPolicy(_Entry):
    timezone: ZoneName
    business_hours: BusinessHours
    kinds: dict[AlertKind, KindPolicy]

    @model_validator(mode="after")
    def _every_paging_kind(self) -> "EscalationPolicy":
        missing = [
            k.value for k in AlertKind if k is not AlertKind.WITHDRAWN and k not in self.kinds
        ]
        if missing:
            raise ValueError(f"no escalation chain for {', '.join(missing)}")
        if AlertKind.WITHDRAWN in self.kinds:
            raise ValueError("withdrawn alerts are not escalated: they resolve the pages sent")
        return self


@dataclass(frozen=True)
class Due:
    """Level `level` of the chain pages `tier` at `at`, unless the alert was acknowledged."""

    level: int
    tier: Tier | Literal["fallback"]
    at: datetime


def schedule(policy: EscalationPolicy, kind: AlertKind, raised_at: datetime) -> list[Due]:
    """Every page the chain would send for an alert raised at `raised_at`, none acknowledged;
    the last goes to the fallback when the last tier's window has passed."""
    if kind is AlertKind.WITHDRAWN:
        return []
    rule = policy.kinds[kind]
    at = next_business_moment(policy, raised_at) if rule.business_hours_only else raised_at
    dues = []
    for level, chain_tier in enumerate(rule.chain):
        dues.append(Due(level, chain_tier.tier, at))
        at += timedelta(minutes=chain_tier.ack_within_minutes)
    dues.append(Due(len(rule.chain), "fallback", at))
    return dues


def next_business_moment(policy: EscalationPolicy, at: datetime) -> datetime:
    """`at` itself within business hours; otherwise when they next start (local time)."""
    hours = policy.business_hours
    local = at.astimezone(ZoneInfo(policy.timezone))
    for days_ahead in range(8):
        day = local.date() + timedelta(days=days_ahead)
        if _WEEKDAYS[day.weekday()] not in hours.days:
            continue
        opens = datetime.combine(day, hours.start, local.tzinfo)
        closes = datetime.combine(day, hours.end, local.tzinfo)
        if local < closes:
            return max(local, opens).astimezone(at.tzinfo)
    raise AssertionError("business hours have at least one day a week")  # validated on load


def load_escalation_policy(path: Path | None = None) -> EscalationPolicy:
    """Read a policy file; without a path, the defaults shipped beside this module."""
    default = resources.files("services.notifier") / "default_escalation.yaml"
    return load_yaml_model(EscalationPolicy, path or default)

"""The escalation chain: tiers and windows per alert kind, business hours, the policy file."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import AlertKind
from services.notifier.domain.escalation import load_escalation_policy, schedule

POLICY = load_escalation_policy()
TUESDAY_NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def plan(kind: AlertKind, raised_at: datetime) -> list[tuple[int, str, datetime]]:
    return [(due.level, due.tier, due.at) for due in schedule(POLICY, kind, raised_at)]


def test_critical_low_climbs_a_tier_every_10_minutes_then_reaches_the_fallback() -> None:
    night = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)  # a Sunday, 3 a.m.: emergencies do not wait
    minutes = [0, 10, 20, 30]
    assert plan(AlertKind.CRITICAL_LOW, night) == [
        (level, tier, night + timedelta(minutes=m))
        for level, (tier, m) in enumerate(
            zip(["primary", "secondary", "attending", "fallback"], minutes, strict=True)
        )
    ]


@pytest.mark.parametrize(
    ("raised_at", "first_page"),
    [
        (TUESDAY_NOON, TUESDAY_NOON),
        (datetime(2026, 11, 24, 8, 0, tzinfo=UTC), datetime(2026, 11, 24, 8, 0, tzinfo=UTC)),
        (datetime(2026, 11, 24, 7, 59, tzinfo=UTC), datetime(2026, 11, 24, 8, 0, tzinfo=UTC)),
        (datetime(2026, 11, 24, 18, 0, tzinfo=UTC), datetime(2026, 11, 25, 8, 0, tzinfo=UTC)),
        (datetime(2026, 11, 27, 19, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC)),
        (datetime(2026, 11, 28, 11, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC)),
    ],
)
def test_refractory_waits_for_business_hours(raised_at: datetime, first_page: datetime) -> None:
    (primary, attending, fallback) = plan(AlertKind.REFRACTORY, raised_at)
    assert primary == (0, "primary", first_page)
    assert attending == (1, "attending", first_page + timedelta(hours=2))
    assert fallback == (2, "fallback", first_page + timedelta(hours=6))


def test_business_hours_are_local_time(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "services/notifier/default_escalation.yaml").read_text()
    policy_file = tmp_path / "escalation.yaml"
    policy_file.write_text(text.replace("timezone: UTC", "timezone: Europe/London"))
    policy = load_escalation_policy(policy_file)
    summer = datetime(2026, 7, 7, 7, 30, tzinfo=UTC)  # 08:30 in London (BST)
    assert schedule(policy, AlertKind.PERSISTENT_SEVERE, summer)[0].at == summer
    winter = datetime(2026, 12, 8, 7, 30, tzinfo=UTC)  # 07:30 in London (GMT)
    opening = winter.replace(hour=8, minute=0)
    assert schedule(policy, AlertKind.PERSISTENT_SEVERE, winter)[0].at == opening


def test_a_withdrawal_is_not_escalated() -> None:
    assert schedule(POLICY, AlertKind.WITHDRAWN, TUESDAY_NOON) == []


VALID = """
timezone: UTC
business_hours: {days: [mon], start: "08:00", end: "18:00"}
kinds:
  critical_low: {chain: [{tier: primary, ack_within_minutes: 5}]}
  persistent_severe: {chain: [{tier: primary, ack_within_minutes: 60}]}
  refractory: {chain: [{tier: primary, ack_within_minutes: 60}]}
"""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            VALID.replace("  refractory: {chain: [{tier: primary, ack_within_minutes: 60}]}\n", ""),
            "no escalation chain for refractory",
        ),
        (
            VALID + "  withdrawn: {chain: [{tier: primary, ack_within_minutes: 5}]}\n",
            "withdrawn alerts are not escalated",
        ),
        (VALID.replace('end: "18:00"', "end: 18:00"), "write times in quotes"),
        (VALID.replace("timezone: UTC", "timezone: Mars/Olympus"), "unknown time zone"),
        (VALID.replace("ack_within_minutes: 5", "ack_within_minutes: 0"), "greater than 0"),
        (
            VALID.replace("chain: [{tier: primary, ack_within_minutes: 5}]", "chain: []"),
            "at least 1 item",
        ),
        (VALID.replace('end: "18:00"', 'end: "07:00"'), "end after the start"),
    ],
)
def test_an_unusable_policy_is_refused_with_the_reason(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "escalation.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError, match=words):
        load_escalation_policy(path)


def test_the_base_of_those_cases_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "escalation.yaml"
    path.write_text(VALID)
    assert load_escalation_policy(path).kinds[AlertKind.CRITICAL_LOW].chain[0].tier == "primary"

"""The rules file: thresholds per population, versioned, and the clinical predicates on them. Pure.

The code names the clinical concepts (`is_critical_low`, `is_iwg_response`...); the numbers
live in the YAML file, never in code.
"""

from datetime import date, datetime, timedelta
from functools import cache, cached_property
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas import (
    DEFAULT_LINES,
    Population,
    TherapyLine,
    Thresholds,
    TreatmentCategory,
    TreatmentEvent,
)
from services.config import load_yaml_model


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CriticalLowRule(_Rule):
    below: float = Field(gt=0)
    page_preliminary: bool = False
    repage_drop_fraction: float = Field(ge=0, lt=1)
    repage_after_hours: float = Field(gt=0)
    episode_closes_at: float = Field(gt=0)

    @property
    def repage_after(self) -> timedelta:
        return timedelta(hours=self.repage_after_hours)


class PersistentSevereRule(_Rule):
    below: float = Field(gt=0)
    min_values: int = Field(ge=2)
    min_span_days: float = Field(ge=0)


class DiagnosisCode(_Rule):
    """A diagnosis code a rule asks for; a trailing "*" matches every code it begins (D69.4*).
    Dots are ignored, as HL7 v2 feeds often leave them out (D693)."""

    system: str = Field(min_length=1)
    code: str = Field(min_length=1)

    def matches(self, system: str, code: str) -> bool:
        if system != self.system:
            return False
        wanted, given = _plain(self.code), _plain(code)
        if wanted.endswith("*"):
            return given.startswith(wanted[:-1])
        return given == wanted


def _plain(code: str) -> str:
    return code.replace(".", "").strip().upper()


class RefractoryRule(_Rule):
    below: float = Field(gt=0)
    response_multiple_of_baseline: float = Field(gt=1)
    non_response_ceiling: float = Field(gt=0)
    complete_response_at: float = Field(gt=0)
    assess_after_days: float = Field(ge=0)
    new_course_after_days: float = Field(gt=0)
    assess_after_splenectomy_days: float = Field(ge=0)
    post_transfusion_hours: float = Field(ge=0)
    min_values: int = Field(ge=2)
    min_gap_days: float = Field(ge=0)
    requires_diagnosis: tuple[DiagnosisCode, ...] = Field(
        default=(),
        description="When set, refractory and persistent_severe page only for a patient with one "
        "of these diagnoses on record (keeps oncology and ICU patients on steroids off the ITP "
        "pager); empty: no diagnosis needed.",
    )

    @property
    def assess_after(self) -> timedelta:
        return timedelta(days=self.assess_after_days)

    @property
    def assess_after_splenectomy(self) -> timedelta:
        return timedelta(days=self.assess_after_splenectomy_days)

    @property
    def post_transfusion(self) -> timedelta:
        return timedelta(hours=self.post_transfusion_hours)


class PopulationRules(_Rule):
    critical_low: CriticalLowRule
    persistent_severe: PersistentSevereRule
    refractory: RefractoryRule

    @cached_property
    def all_clear_at(self) -> float:
        """A count at or above this closes any critical episode and breaks any run of low
        counts: with no refractory assessment under way, it needs no further evaluation."""
        return max(self.critical_low.episode_closes_at, self.persistent_severe.below)


class Rules(_Rule):
    version: str = Field(min_length=1)
    horizon_days: float = Field(gt=0)
    treatments_shown_days: float = Field(ge=0)
    line_overrides: dict[TreatmentCategory, TherapyLine] = Field(
        default_factory=dict,
        description="A site's own line of therapy for a category, over the treatment table's "
        "(stamped on every alert).",
    )
    populations: dict[Population, PopulationRules]

    @cached_property
    def overrides(self) -> tuple[str, ...]:
        """The overrides as alerts name them, e.g. "anti_d: second"."""
        return tuple(f"{c.value}: {line}" for c, line in sorted(self.line_overrides.items()))

    def thresholds(self, population: Population) -> Thresholds:
        """The limits an alert for this population carries, for charts of its counts."""
        return self._thresholds[population]

    @cached_property
    def _thresholds(self) -> dict[Population, Thresholds]:
        """Each population's limits, made once: every alert carries them (Thresholds is frozen,
        so one copy serves them all)."""
        return {
            population: Thresholds(
                critical_below_10e9_per_l=rules.critical_low.below,
                refractory_below_10e9_per_l=rules.refractory.below,
            )
            for population, rules in self.populations.items()
        }

    def line_of(self, treatment: TreatmentEvent) -> TherapyLine:
        """The treatment's line: the site's override, else what ingest's table stamped on it
        (DEFAULT_LINES for events from before ingest stamped one)."""
        return (
            self.line_overrides.get(treatment.category)
            or treatment.line
            or DEFAULT_LINES[treatment.category]
        )


def load_rules(path: Path | None = None) -> Rules:
    """Read a rules file; without a path, the defaults shipped beside this module."""
    return load_yaml_model(Rules, path or resources.files(__package__) / "default_rules.yaml")


def population_at(birth_date: date | None, collected_at: datetime) -> Population:
    """Paediatric below 18 years of age at collection; adult otherwise or when age is unknown."""
    return population_of(adulthood(birth_date), collected_at)


def population_of(adult_from: date | None, collected_at: datetime) -> Population:
    """As population_at, for a patient whose adulthood is known already."""
    if adult_from is None or collected_at.date() >= adult_from:
        return "adult"
    return "paediatric"


@cache  # one entry per distinct birth date: a few tens of thousands at most
def adulthood(birth_date: date | None) -> date | None:
    """The day a patient turns 18 (born on 29 February: 1 March in a common year); None when
    the birth date is unknown, as such a patient is treated as adult."""
    if birth_date is None:
        return None
    year = birth_date.year + 18
    try:
        return birth_date.replace(year=year)
    except ValueError:
        return date(year, 3, 1)


def is_below(value: float, comparator: str | None, limit: float) -> bool:
    """Strictly below `limit`; "<x" counts when x <= limit; ">x" never does."""
    if comparator in (">", ">="):
        return False
    if comparator == "<":
        return value <= limit
    return value < limit


def is_at_or_above(value: float, comparator: str | None, limit: float) -> bool:
    """Certainly at or above `limit`: a "<x" value never is."""
    return comparator not in ("<", "<=") and value >= limit


def is_critical_low(value: float, comparator: str | None, rule: CriticalLowRule) -> bool:
    return is_below(value, comparator, rule.below)


def closes_critical_episode(value: float, comparator: str | None, rule: CriticalLowRule) -> bool:
    return is_at_or_above(value, comparator, rule.episode_closes_at)


def is_no_response(
    value: float, comparator: str | None, baseline: float | None, rule: RefractoryRule
) -> bool:
    """Severe thrombocytopenia that therapy has not lifted: below 30, or below twice the
    baseline while still below the ceiling (50). A count of 90 is never "no response"."""
    if is_below(value, comparator, rule.below):
        return True
    return (
        baseline is not None
        and is_below(value, comparator, rule.response_multiple_of_baseline * baseline)
        and is_below(value, comparator, rule.non_response_ceiling)
    )


def is_iwg_response(
    value: float, comparator: str | None, baseline: float | None, rule: RefractoryRule
) -> bool:
    """IWG 2009: response is >= 30 and at least twice the baseline; >= 100 is complete response."""
    if is_at_or_above(value, comparator, rule.complete_response_at):
        return True
    doubled = baseline is None or is_at_or_above(
        value, comparator, rule.response_multiple_of_baseline * baseline
    )
    return is_at_or_above(value, comparator, rule.below) and doubled

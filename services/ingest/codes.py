"""Which coded observations are platelet counts. Match on codes, never on display text."""

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

LOINC_SYSTEMS = frozenset({"http://loinc.org", "LN", "LOINC", "2.16.840.1.113883.6.1"})

# LOINC codes meaning "platelet count" (see ../shared/design/CLINICAL.md). 11125-2 (morphology) and
# 33914-3 (eGFR) are deliberately absent; "PLT" as a coding system is pre-release LOINC, not
# platelets.
PLATELET_COUNT_LOINC = frozenset(
    {"777-3", "26515-7", "778-1", "13056-7", "26516-5", "49497-1", "74464-9"}
)


@dataclass(frozen=True)
class FeedContext:
    """What a feed parser needs besides the input: the site's settings and the arrival time.

    Plain values, so the readers stay free of the configuration system: the glue builds one
    per input (site.site_context)."""

    received_at: datetime
    local_zone: tzinfo
    local_platelet_codes: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    fhir_reference_authority: str | None = None


def is_platelet_count(
    system: str, code: str, local_codes: frozenset[tuple[str, str]] = frozenset()
) -> bool:
    """LOINC platelet-count codes, or a (system, code) pair the site configured as one."""
    return (system in LOINC_SYSTEMS and code in PLATELET_COUNT_LOINC) or (
        system,
        code,
    ) in local_codes

"""Which coded observations are platelet counts. Match on codes, never on display text."""

LOINC_SYSTEMS = frozenset({"http://loinc.org", "LN", "LOINC"})

# LOINC codes meaning "platelet count" (see ../shared/design/CLINICAL.md). 11125-2 (morphology) and
# 33914-3 (eGFR) are deliberately absent.
PLATELET_COUNT_LOINC = frozenset(
    {"777-3", "26515-7", "778-1", "13056-7", "26516-5", "49497-1", "74464-9"}
)


def is_platelet_count(system: str, code: str) -> bool:
    return system in LOINC_SYSTEMS and code in PLATELET_COUNT_LOINC

"""Result status from HL7 v2 OBX-11 (table 0085) and FHIR Observation.status, in one vocabulary."""

from schemas import ResultStatus

# Official v2->FHIR map where one exists (A, C, D, F, I); the rest follow table 0085's meaning.
HL7_RESULT_STATUS: dict[str, ResultStatus] = {
    "F": ResultStatus.FINAL,
    "C": ResultStatus.CORRECTED,
    "A": ResultStatus.AMENDED,
    "B": ResultStatus.AMENDED,  # v2.8 "appended": an addition to a final result
    "U": ResultStatus.FINAL,  # changed to final without retransmitting the value
    "V": ResultStatus.FINAL,  # v2.8 "verified"
    "P": ResultStatus.PRELIMINARY,
    "R": ResultStatus.PRELIMINARY,  # entered, not verified
    "S": ResultStatus.PRELIMINARY,  # partial
    "D": ResultStatus.ENTERED_IN_ERROR,  # delete the result
    "W": ResultStatus.WRONG_PATIENT,  # posted to the wrong patient
    "X": ResultStatus.CANCELLED,  # cannot be obtained
    "N": ResultStatus.CANCELLED,  # not asked
    "I": ResultStatus.REGISTERED,  # specimen in lab, result pending
    "O": ResultStatus.REGISTERED,  # order detail only
}

# FHIR R4 Observation.status values; "wrong-patient" is PlateletWatch's own (from HL7 OBX-11 W).
FHIR_OBSERVATION_STATUS: dict[str, ResultStatus] = {
    status.value: status for status in ResultStatus if status is not ResultStatus.WRONG_PATIENT
}

# Statuses that retract or replace an earlier result: they carry its identity.
REPLACING = frozenset(
    {
        ResultStatus.CORRECTED,
        ResultStatus.AMENDED,
        ResultStatus.ENTERED_IN_ERROR,
        ResultStatus.WRONG_PATIENT,
    }
)
# Statuses that withdraw an earlier result: published without a value.
RETRACTING = frozenset({ResultStatus.ENTERED_IN_ERROR, ResultStatus.WRONG_PATIENT})
# Statuses with nothing measured yet (or ever): without a value they are filtered, not refused.
NOT_MEASURED = frozenset({ResultStatus.REGISTERED, ResultStatus.CANCELLED})

"""Issue 14's classifier side: the treatment table's line of therapy is the one source of truth
(a site may override it, and the override is stamped on alerts), an ITP diagnosis may be required
before refractory and persistent_severe page, and the lab's own flags reach the evidence."""

import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from schemas import (
    Coding,
    DiagnosisEvent,
    LabResult,
    ResultStatus,
    TreatmentCategory,
    stable_event_id,
)
from services.classifier.engine import DIAGNOSES_KEPT, History, apply
from services.classifier.rules import Rules, load_rules
from services.ingest.codes import FeedContext
from services.ingest.treatments import load_treatment_table
from services.tools.replay import Summary, replay
from tests.real_time_corpus import oru
from tests.test_engine import ADULT, RULES, T0, feed, flat, result, treatment
from tests.test_hl7_diagnoses import adt, dg1

DEFAULT_RULES = Path(__file__).parents[1] / "services/classifier/default_rules.yaml"
ITP = Coding(system="http://hl7.org/fhir/sid/icd-10", code="D69.3", display="ITP")


def rules_with(tmp_path: Path, extra: str, version: str = "site-1") -> Rules:
    text = re.sub(r"^version: .*$", f'version: "{version}"', DEFAULT_RULES.read_text(), flags=re.M)
    path = tmp_path / "rules.yaml"
    path.write_text(text + extra)
    return load_rules(path)


def diagnosis(code: Coding, *, on_record: bool = True, ident: str = "C1") -> DiagnosisEvent:
    return DiagnosisEvent(
        event_id=stable_event_id("test-diagnosis", ident, code.code, str(on_record)),
        source="fhir",
        patient=ADULT,
        diagnosis_id=ident,
        codes=(code,),
        name=code.display,
        on_record=on_record,
        received_at=T0,
    )


def refractory_story(*first: object) -> list[object]:
    return [
        *first,
        result(10, days=-1),
        treatment(TreatmentCategory.ANTI_D, 0, "WinRho"),
        result(25, days=7),
        result(24, days=8),
    ]


def test_anti_d_is_first_line_as_the_treatment_table_says() -> None:
    _, alerts = feed(*refractory_story())
    assert "refractory" in flat(alerts)
    _, untreated = feed(
        treatment(TreatmentCategory.ANTI_D, -1, "WinRho"),
        result(25), result(28, days=3), result(27, days=7),
    )  # fmt: skip
    assert "persistent_severe" not in flat(untreated)  # anti-D is first-line therapy on record


def test_the_line_stamped_by_ingest_is_the_one_source_of_truth() -> None:
    second = treatment(TreatmentCategory.CORTICOSTEROID, 0, "dexamethasone").model_copy(
        update={"line": "second"}
    )
    _, alerts = feed(result(10, days=-1), second, result(25, days=7), result(24, days=8))
    assert "refractory" not in flat(alerts)


def test_a_site_override_of_a_line_is_stamped_on_its_alerts(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, "line_overrides: {anti_d: second}\n")
    history = History()
    out = [a for e in refractory_story() for a in apply(history, e, rules, T0)]  # type: ignore[arg-type]
    # Anti-D is not first-line at this site: three counts < 30 over 9 days are then untreated.
    assert [a.kind.value for a in out] == ["critical_low", "persistent_severe"]
    assert {a.rule.overrides for a in out} == {("anti_d: second",)}
    assert RULES.line_overrides == {}


def test_refractory_and_persistent_severe_may_require_an_itp_diagnosis(tmp_path: Path) -> None:
    assert RULES.populations["adult"].refractory.requires_diagnosis == ()  # off by default
    text = DEFAULT_RULES.read_text().replace(
        "requires_diagnosis: []",
        "requires_diagnosis:\n"
        '        - {system: "http://hl7.org/fhir/sid/icd-10", code: "D69.3"}\n'
        '        - {system: "http://hl7.org/fhir/sid/icd-10", code: "D69.4*"}',
    )
    (tmp_path / "rules.yaml").write_text(text)
    gated = load_rules(tmp_path / "rules.yaml")

    def kinds_with(*first: object) -> list[str]:
        history = History()
        return [
            a.kind.value
            for e in refractory_story(*first)
            for a in apply(history, e, gated, T0)  # type: ignore[arg-type]
        ]

    assert kinds_with() == ["critical_low"]  # no diagnosis on record: not the ITP pager's
    assert "refractory" in kinds_with(diagnosis(ITP))
    assert "refractory" in kinds_with(diagnosis(Coding(system=ITP.system, code="D6942")))
    other = Coding(system=ITP.system, code="C91.0", display="acute lymphoblastic leukaemia")
    assert kinds_with(diagnosis(other)) == ["critical_low"]
    assert kinds_with(diagnosis(ITP), diagnosis(ITP, on_record=False)) == ["critical_low"]


def test_the_evidence_carries_the_code_and_the_labs_flags() -> None:
    flagged = result(12).model_copy(update={"abnormal_flags": ("LL",)})
    (alert,) = apply(History(), flagged, RULES, T0)
    (evidence,) = alert.evidence.results
    assert evidence.code is not None
    assert (evidence.code.system, evidence.code.code) == ("http://loinc.org", "777-3")
    assert evidence.abnormal_flags == ("LL",)


def test_a_panic_flag_on_a_count_above_our_threshold_is_noted_on_the_next_alert() -> None:
    flagged = result(24, days=0).model_copy(update={"abnormal_flags": ("LL",)})
    history, alerts = feed(flagged, result(12, days=1))
    (alert,) = alerts[1]
    assert alert.evidence.note is not None
    assert "LL" in alert.evidence.note
    assert "24" in alert.evidence.note
    restored = History.from_json(history.to_json())
    assert restored.values["R@0"].flags == ("LL",)


def test_a_smear_estimate_keeps_its_code() -> None:
    estimate = LabResult.model_validate(
        result(12).model_dump()
        | {"code": {"system": "http://loinc.org", "code": "49497-1"}, "status": ResultStatus.FINAL}
    )
    (alert,) = apply(History(), estimate, RULES, T0 + timedelta(hours=1))
    assert alert.evidence.results[0].code == Coding(system="http://loinc.org", code="49497-1")


def test_replay_pages_the_itp_pager_only_for_a_patient_with_an_itp_diagnosis(
    tmp_path: Path,
) -> None:
    """HL7 end to end: three counts < 30 over 8 days in ORU^R01, and for one of two patients an
    ADT^A08 carrying the DG1 of ITP. With the diagnosis required, only that patient's
    persistent_severe pages; both patients' critical counts page."""
    counts = [("20261101080000", "25"), ("20261104080000", "12"), ("20261109080000", "27")]
    files = []
    for mrn in ("ITP-1", "ONC-2"):
        for n, (collected, value) in enumerate(counts):
            path = tmp_path / f"{mrn}-{n}.hl7"
            path.write_bytes(oru(mrn, f"{mrn}-F{n}", value, collected))
            files.append(path)
    admission = tmp_path / "adt.hl7"
    segments = adt(dg1()).decode().split("\r")
    segments[2] = "PID|1||ITP-1^^^GENHOSP^MR||DOE^JANE||19700501|F"  # the ORU's patient
    admission.write_bytes("\r".join(segments).encode())
    gated = tmp_path / "gated.yaml"
    gated.write_text(
        DEFAULT_RULES.read_text().replace(
            "requires_diagnosis: []",
            'requires_diagnosis: [{system: "http://hl7.org/fhir/sid/icd-10-cm", code: "D69.3"}]',
        )
    )
    context = FeedContext(received_at=T0, local_zone=ZoneInfo("Europe/Paris"))
    alerts = list(
        replay([admission, *files], load_rules(gated), load_treatment_table(), context, Summary())
    )
    by_patient = {(a.patient.identifier.mrn, a.kind.value) for a in alerts}
    assert by_patient == {
        ("ITP-1", "critical_low"), ("ITP-1", "persistent_severe"), ("ONC-2", "critical_low"),
    }  # fmt: skip


def test_a_patients_diagnoses_on_record_are_bounded() -> None:
    history = History()
    for n in range(DIAGNOSES_KEPT + 5):
        apply(history, diagnosis(Coding(system=ITP.system, code=f"X{n}"), ident=f"D{n}"), RULES, T0)
    assert len(history.diagnoses) == DIAGNOSES_KEPT
    assert "D0" not in history.diagnoses
    assert f"D{DIAGNOSES_KEPT + 4}" in history.diagnoses


def test_a_therapy_the_sender_withdrew_no_longer_counts() -> None:
    """Dexamethasone charted, then marked entered in error: no course to fail, no refractory."""
    given = treatment(TreatmentCategory.CORTICOSTEROID, 0, "dexamethasone").model_copy(
        update={"treatment_id": "MedicationAdministration/dex-1"}
    )
    withdrawn = given.model_copy(
        update={"event_id": stable_event_id("withdrawn", given.event_id), "on_record": False}
    )
    history, alerts = feed(
        result(10, days=-1), given, withdrawn, result(25, days=7), result(24, days=8)
    )
    assert "refractory" not in flat(alerts)
    assert history.treatments == {}
    _, kept = feed(result(10, days=-1), given, result(25, days=7), result(24, days=8))
    assert "refractory" in flat(kept)

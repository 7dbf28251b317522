"""HL7 v2 parsing and ORU^R01 reading, without a broker."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from schemas import LabResult, ResultStatus
from services.ingest.codes import FeedContext
from services.ingest.hl7v2.ack import build_ack
from services.ingest.hl7v2.dispatch import Hl7Result, read_message
from services.ingest.hl7v2.message import Hl7ParseError, parse, split_messages, unescape
from services.ingest.outcomes import Filter, Publish, Rejection, RejectReason
from services.ingest.treatments import load_treatment_table

RECEIVED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
TREATMENTS = load_treatment_table()
CONTEXT = FeedContext(received_at=RECEIVED, local_zone=ZoneInfo("Europe/Paris"))

MSH = "MSH|^~\\&|LIS|GENHOSP|PW|PW|20261125081500+0100||ORU^R01^ORU_R01|MSG0001|P|2.5.1"
PID = "PID|1||MRN-42^^^GENHOSP&2.16.840.1.113883.19.5&ISO^MR~99-88^^^SSA^SS||DOE^JANE||20120407|F"
OBR = (
    "OBR|1|PL-1^EHR|FL-77^LAB|58410-2^CBC^LN|||20261125074000+0100"
    "|||||||||||||||20261125080500+0100|||F"
)


def message(*obx: str, msh: str = MSH, pid: str = PID, obr: str = OBR, sep: str = "\r") -> bytes:
    return sep.join([msh, pid, obr, *obx]).encode()


def platelet_obx(
    value: str = "12", unit: str = "10\\S\\9/L", status: str = "F", **parts: str
) -> str:
    code = parts.get("code", "777-3^Platelets^LN")
    flags = parts.get("flags", "LL")
    kind = parts.get("kind", "NM")
    return (
        f"OBX|1|{kind}|{code}||{value}|{unit}|150-400|{flags}|||{status}|||{parts.get('obx14', '')}"
    )


def read(raw: bytes, context: FeedContext = CONTEXT) -> Hl7Result:
    return read_message(raw, context, TREATMENTS)


def only_result(raw: bytes) -> LabResult:
    result = read(raw)
    (event,) = result.events
    assert result.ack_code == "AA", result.rejections
    return event


def only_rejection(raw: bytes) -> Rejection:
    (rejection,) = read(raw).rejections
    return rejection


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators_and_a_byte_order_mark(sep: str) -> None:
    raw = b"\xef\xbb\xbf" + message(platelet_obx(), sep=sep) + sep.encode()
    result = only_result(raw)
    assert result.count is not None
    assert result.count.value_10e9_per_l == 12
    assert result.count.original_unit == "10^9/L"  # \S\ is the escaped component separator


def test_a_critical_platelet_count_with_everything_a_hematologist_needs() -> None:
    result = only_result(message(platelet_obx()))
    assert result.patient.identifier.key == "GENHOSP|MRN-42"  # the MR repetition, not the SSN
    assert str(result.patient.birth_date) == "2012-04-07"
    assert result.status is ResultStatus.FINAL
    assert result.abnormal_flags == ("LL",)
    assert result.collected_at == datetime(2026, 11, 25, 7, 40, tzinfo=timezone(timedelta(hours=1)))
    assert result.verified_at == datetime(2026, 11, 25, 8, 5, tzinfo=timezone(timedelta(hours=1)))
    assert result.received_at == RECEIVED
    assert result.result_id == "FL-77^LAB|LN:777-3|"
    assert result.code.code == "777-3"


def test_the_same_message_resent_gives_the_same_event_id() -> None:
    assert (
        only_result(message(platelet_obx())).event_id
        == only_result(message(platelet_obx())).event_id
    )


def test_structured_numeric_keeps_the_comparator() -> None:
    count = only_result(message(platelet_obx(kind="SN", value="<^5"))).count
    assert count is not None
    assert (count.comparator, count.value_10e9_per_l, count.original_value) == ("<", 5, "<5")


def test_per_microlitre_counts_are_converted() -> None:
    count = only_result(message(platelet_obx(value="12000", unit="/uL"))).count
    assert count is not None
    assert count.value_10e9_per_l == 12


def test_loinc_in_the_alternate_triplet_counts() -> None:
    obx = platelet_obx(code="PLT^Platelet count^L^777-3^Platelets^LN")
    assert only_result(message(obx)).code.code == "777-3"


@pytest.mark.parametrize(
    "code",
    [
        "11125-2^PLATELETS^LN",  # morphology, though the text says platelets
        "PLT1141^Arbovirus^PLT",  # PLT is a coding system (pre-release LOINC), not platelets
        "33914-3^eGFR^LN",
        "PLT^Platelets^L",  # a local code, not configured
    ],
)
def test_codes_that_are_not_platelet_counts_are_filtered(code: str) -> None:
    result = read(message(platelet_obx(code=code)))
    assert result.ack_code == "AA"
    assert [type(o) for o in result.outcomes] == [Filter]


def test_a_configured_local_code_is_a_platelet_count() -> None:
    local = FeedContext(RECEIVED, UTC, frozenset({("L", "PLT")}))
    result = read(message(platelet_obx(code="PLT^Platelets^L")), local)
    assert [e.code.code for e in result.events] == ["PLT"]


def test_a_correction_carries_the_identity_of_the_result_it_replaces() -> None:
    final = only_result(message(platelet_obx()))
    corrected = only_result(message(platelet_obx(value="140", status="C", flags="N")))
    assert corrected.status is ResultStatus.CORRECTED
    assert corrected.replaces_result_id == final.result_id == corrected.result_id
    assert corrected.event_id != final.event_id


@pytest.mark.parametrize(
    ("status", "expected"),
    [("D", ResultStatus.ENTERED_IN_ERROR), ("W", ResultStatus.WRONG_PATIENT)],
)
def test_deletions_and_wrong_patient_need_no_value(status: str, expected: ResultStatus) -> None:
    withdrawn = only_result(message(platelet_obx(value="", unit="", status=status, flags="")))
    assert withdrawn.status is expected
    assert withdrawn.count is None
    assert withdrawn.replaces_result_id == withdrawn.result_id


def test_a_pending_result_is_filtered_and_a_final_one_without_value_rejected() -> None:
    pending = read(message(platelet_obx(value="", unit="", status="I")))
    assert pending.ack_code == "AA"
    assert isinstance(pending.outcomes[0], Filter)
    empty = only_rejection(message(platelet_obx(value="", status="F")))
    assert empty.reason is RejectReason.UNREADABLE_VALUE


def test_an_unknown_unit_is_rejected_with_an_err_naming_the_field() -> None:
    raw = message(platelet_obx(unit="mg/dL"), "OBX|2|NM|718-7^Hemoglobin^LN||9.1|g/dL|||||F")
    result = read(raw)
    assert result.ack_code == "AE"
    assert [type(o) for o in result.outcomes] == [Rejection, Filter]
    ack = parse(build_ack(result, result.ack_code, result.rejections, RECEIVED))
    msa = ack.first("MSA")
    assert msa is not None
    assert (msa.get(1), msa.get(2)) == ("AE", "MSG0001")
    (err,) = ack.all("ERR")
    assert err.get(3, 1) == "103"
    assert err.get(3, 3) == "HL70357"
    assert err.get(2, 1).startswith("OBX[1]")
    assert "mg/dL" in err.get(8)


def test_a_repeated_value_is_ambiguous_and_refused() -> None:
    assert (
        only_rejection(message(platelet_obx(value="27~25"))).reason is RejectReason.UNREADABLE_VALUE
    )


def test_without_a_patient_identifier_the_result_is_refused() -> None:
    pid = "PID|1||^^^NPI^MR||DOE^JANE"
    assert (
        only_rejection(message(platelet_obx(), pid=pid)).reason
        is RejectReason.NO_PATIENT_IDENTIFIER
    )


def test_the_sending_facility_is_the_authority_when_pid3_names_none() -> None:
    pid = "PID|1||MRN-7^^^^MR"
    assert only_result(message(platelet_obx(), pid=pid)).patient.identifier.key == "GENHOSP|MRN-7"


def test_without_a_collection_time_the_result_is_refused() -> None:
    obr = "OBR|1||FL-77^LAB|58410-2^CBC^LN"
    assert (
        only_rejection(message(platelet_obx(), obr=obr)).reason is RejectReason.NO_COLLECTION_TIME
    )


def test_times_without_an_offset_are_local_and_obx14_wins() -> None:
    """Read in the hospital's zone (summer time in Paris), then held as the UTC instant."""
    result = only_result(message(platelet_obx(obx14="20260701063000")))
    assert result.collected_at == datetime(2026, 7, 1, 6, 30, tzinfo=ZoneInfo("Europe/Paris"))
    assert result.collected_at.tzinfo is UTC
    assert result.collected_at.hour == 4


def test_obx_before_any_obr_and_an_spm_after_its_obx() -> None:
    raw = "\r".join(
        [
            MSH,
            PID,
            platelet_obx(),
            "OBR|2||FL-78^LAB|58410-2^CBC^LN",
            platelet_obx(value="40", flags="L"),
            "SPM|1|||BLD|||||||||||||20261125060000+0000",
        ]
    ).encode()
    result = read(raw)
    assert result.ack_code == "AE"  # the first OBX has no OBR and no OBX-14: no collection time
    (event,) = result.events
    assert event.collected_at == datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


def test_five_encoding_characters_and_latin_1_declared_in_msh18() -> None:
    msh = ("MSH|^~\\&#|LIS|GENHOSP|PW|PW|20261125081500||ORU^R01|M2|P|2.5.1|||||| 8859/1").replace(
        "| 8859/1", "|8859/1"
    )
    raw = message(platelet_obx(unit="x10E3/\u00b5L"), msh=msh).decode().encode("latin-1")
    count = only_result(raw).count
    assert count is not None
    assert count.original_unit == "x10E3/\u00b5L"


def test_utf8_micro_sign_without_msh18() -> None:
    count = only_result(message(platelet_obx(unit="10*3/\u00b5L"))).count
    assert count is not None
    assert count.original_unit == "10*3/\u00b5L"


def test_unescape() -> None:
    delimiters = parse(message()).delimiters
    text = r"a\T\b\.br\c\R\d\S\e\F\f\E\g\X41\h\H\i"
    assert unescape(text, delimiters) == "a&b\nc~d^e|f\\gAhi"


@pytest.mark.parametrize(
    ("raw", "reason", "code"),
    [
        (b"PID|1||X", RejectReason.UNPARSEABLE_HL7, "AR"),
        (b"\x00\x01garbage", RejectReason.UNPARSEABLE_HL7, "AR"),
        (
            message(msh=MSH.replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01")),
            RejectReason.UNSUPPORTED_MESSAGE,
            "AR",
        ),
        (message(msh=MSH.replace("|2.5.1", "|2.2")), RejectReason.UNSUPPORTED_VERSION, "AR"),
    ],
)
def test_unacceptable_messages_are_rejected_whole(
    raw: bytes, reason: RejectReason, code: str
) -> None:
    result = read(raw)
    assert result.ack_code == code
    assert [r.reason for r in result.rejections] == [reason]
    ack = parse(build_ack(result, code, result.rejections, RECEIVED))
    assert ack.msh.get(9, 1) == "ACK"


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
def test_supported_versions(version: str) -> None:
    assert only_result(message(platelet_obx(), msh=MSH.replace("|2.5.1", f"|{version}"))).count


def test_ack_swaps_sender_and_receiver() -> None:
    result = read(message(platelet_obx()))
    ack = parse(build_ack(result, "AA", [], RECEIVED))
    assert [ack.msh.get(n) for n in (3, 4, 5, 6)] == ["PW", "PW", "LIS", "GENHOSP"]
    assert ack.msh.get(9, 1) == "ACK"
    assert ack.msh.get(12) == "2.5.1"


def test_a_file_of_several_messages_is_split_at_each_msh() -> None:
    one = message(platelet_obx())
    two = message(platelet_obx(value="9"))
    batch = (
        b"FHS|^~\\&\nBHS|^~\\&\n" + one.replace(b"\r", b"\n") + b"\n" + two + b"\nBTS|2\nFTS|1\n"
    )
    messages = split_messages(batch)
    assert len(messages) == 2
    assert [only_result(m).count.value_10e9_per_l for m in messages] == [12, 9]  # type: ignore[union-attr]


def test_parse_error_names_the_problem() -> None:
    with pytest.raises(Hl7ParseError, match="MSH"):
        parse(b"OBX|1|NM")
    with pytest.raises(Hl7ParseError, match="no valid name"):
        parse(MSH.encode() + b"\rlowercase|1")


def test_outcome_per_obx() -> None:
    result = read(message(platelet_obx(), "OBX|2|NM|718-7^Hemoglobin^LN||9.1|g/dL|||||F"))
    assert [type(o) for o in result.outcomes] == [Publish, Filter]


def test_z_segments_are_ignored_and_repeated_flags_kept() -> None:
    raw = message(platelet_obx(flags="L~A"), "ZDR|1|Dr Who^On call", "ZPR|x")
    result = only_result(raw)
    assert result.abnormal_flags == ("L", "A")


def test_the_ward_is_the_point_of_care_of_the_patients_visit() -> None:
    pv1 = "PV1|1|I|BMT^12^A^GENHOSP"
    assert only_result(message(platelet_obx(), pid=f"{PID}\r{pv1}")).location == "BMT"
    assert only_result(message(platelet_obx())).location is None
    # Two patients in one message: each result takes its own patient's visit.
    second = PID.replace("MRN-42", "MRN-43")
    raw = "\r".join([MSH, PID, "PV1|1|I|ICU", OBR, platelet_obx(), second, OBR, platelet_obx()])
    assert [e.location for e in read(raw.encode()).events] == ["ICU", None]


# Absurd values: refused naming the field (or, for free text, cut), never raised or passed on.


def test_hl7_collection_time_offset_beyond_14_hours_is_refused_naming_obx_14() -> None:
    """Was a ValueError from timezone(): +2400 is no offset."""
    result = read(message(platelet_obx(obx14="20261125074000+2400")))
    (rejection,) = result.rejections
    assert rejection.reason is RejectReason.INVALID_FIELDS
    assert rejection.location == "OBX[1] of OBR 1-14"
    assert "+2400" in rejection.message
    assert "14:00" in rejection.message
    ack = parse(build_ack(result, result.ack_code, result.rejections, RECEIVED))
    (err,) = ack.all("ERR")
    assert (err.get(2, 1), err.get(3, 1)) == ("OBX[1] of OBR 1", "102")


@pytest.mark.parametrize(
    "obx14",
    [
        "99991231235959+0000",  # accepted before, then an OverflowError in the classifier
        "18991231",  # Paris then had an offset in seconds, which JSON cannot carry
        "21010101",
        "20261125074000-1401",
    ],
)
def test_hl7_implausible_collection_time_is_refused(obx14: str) -> None:
    rejection = only_rejection(message(platelet_obx(obx14=obx14)))
    assert (rejection.reason, rejection.location) == (
        RejectReason.INVALID_FIELDS,
        "OBX[1] of OBR 1-14",
    )


def test_hl7_implausible_verified_time_is_passed_over_and_the_count_still_pages() -> None:
    """The verification time is optional (it only times the page): a garbled OBR-22 must not
    cost the critical count; the next candidate (OBX-19, MSH-7) is used."""
    obr = OBR.replace("20261125080500+0100", "99991231")
    result = only_result(message(platelet_obx(), obr=obr))
    assert result.verified_at is not None
    assert result.verified_at.year == 2026


def test_hl7_placeholder_birth_date_is_left_out_not_refused() -> None:
    """A birth date of 1800 is a site's "unknown": the count still pages."""
    result = only_result(message(platelet_obx(), pid=PID.replace("20120407", "18000101")))
    assert result.patient.birth_date is None


def test_hl7_mrn_over_64_characters_is_refused_naming_pid_3() -> None:
    rejection = only_rejection(message(platelet_obx(), pid=PID.replace("MRN-42", "M" * 65)))
    assert (rejection.reason, rejection.location) == (RejectReason.INVALID_FIELDS, "PID-3.1")


def test_hl7_filler_order_number_of_9_kb_is_refused_naming_obr_3() -> None:
    """A 9 kB result id was accepted and bloated the classifier's state."""
    rejection = only_rejection(message(platelet_obx(), obr=OBR.replace("FL-77", "F" * 9000)))
    assert (rejection.reason, rejection.location) == (RejectReason.INVALID_FIELDS, "OBR-3")
    assert len(rejection.message) < 200


def test_hl7_long_display_text_is_cut_to_200_characters() -> None:
    result = only_result(message(platelet_obx(code=f"777-3^{'P' * 500}^LN")))
    assert result.code.display == "P" * 200


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        ("150000", "10*3/uL"),  # 150,000 x10^9/L: a /uL count sent with the wrong unit
        ("1" * 400, "10*9/L"),  # read as infinity before, then null in JSON
    ],
)
def test_hl7_value_beyond_any_platelet_count_is_refused(value: str, unit: str) -> None:
    rejection = only_rejection(message(platelet_obx(value=value, unit=unit)))
    assert rejection.reason is RejectReason.UNREADABLE_VALUE
    assert len(rejection.message) < 200


def test_hl7_refusals_quote_at_most_a_few_characters_of_what_was_sent() -> None:
    long_version = only_rejection(message(platelet_obx(), msh=MSH.replace("2.5.1", "9" * 9000)))
    long_encoding = only_rejection(b"MSH|^~" + b"x" * 9000 + b"|LIS")
    assert max(len(long_version.message), len(long_encoding.message)) < 200


# Structured numeric (OBX-2 SN): comparator ^ number [^ separator ^ number] (HL7 v2.5 2A.72).


@pytest.mark.parametrize(
    ("value", "comparator", "number", "original"),
    [
        ("^12", None, 12, "12"),  # the ordinary form of a plain number: comparator left empty
        ("=^12", None, 12, "12"),
        ("<^5", "<", 5, "<5"),
        ("<=^5", "<=", 5, "<=5"),
        (">^1000", ">", 1000, ">1000"),
        (">=^1000", ">=", 1000, ">=1000"),
        ("^12^^", None, 12, "12"),  # empty trailing components are no range
    ],
)
def test_every_structured_numeric_form_of_a_number_is_a_count(
    value: str, comparator: str | None, number: float, original: str
) -> None:
    count = only_result(message(platelet_obx(kind="SN", value=value))).count
    assert count is not None
    assert (count.comparator, count.value_10e9_per_l, count.original_value) == (
        comparator,
        number,
        original,
    )


@pytest.mark.parametrize("value", ["12", "<5", "<=5", ">1000"])
def test_numeric_values_keep_working(value: str) -> None:
    count = only_result(message(platelet_obx(value=value))).count
    assert count is not None
    assert count.original_value == value


def test_a_structured_numeric_and_its_numeric_form_are_the_same_event() -> None:
    """The same result sent as SN ^12 or as NM 12 is one result: a resend in the other form is
    recognised as a duplicate."""
    structured = only_result(message(platelet_obx(kind="SN", value="^12")))
    numeric = only_result(message(platelet_obx(value="12")))
    assert structured == numeric


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("^10^-^20", "range"),
        ("^1^:^128", "ratio"),
        ("^1^/^128", "ratio"),
        ("^2^+", "categor"),
        ("<>^5", "comparator"),
        ("^abc", "not a number"),
    ],
)
def test_a_structured_numeric_that_is_no_single_count_is_refused_naming_obx_5(
    value: str, words: str
) -> None:
    result = read(message(platelet_obx(kind="SN", value=value)))
    (rejection,) = result.rejections
    assert rejection.reason is RejectReason.UNREADABLE_VALUE
    assert rejection.location == "OBX[1] of OBR 1-5"
    assert words in rejection.message
    assert "no value" not in rejection.message
    ack = parse(build_ack(result, result.ack_code, result.rejections, RECEIVED))
    (err,) = ack.all("ERR")
    assert (err.get(2, 1), err.get(2, 2), err.get(3, 1)) == ("OBX[1] of OBR 1", "5", "102")


def test_an_empty_structured_numeric_has_no_value() -> None:
    rejection = only_rejection(message(platelet_obx(kind="SN", value="^")))
    assert rejection.message == "platelet result has no value"


@pytest.mark.parametrize("unit", ["G/L", "10*9/L"])
def test_giga_per_litre_is_10e9_per_l(unit: str) -> None:
    count = only_result(message(platelet_obx(kind="SN", value="^12", unit=unit))).count
    assert count is not None
    assert (count.value_10e9_per_l, count.original_unit) == (12, unit)


def test_grams_per_litre_is_no_platelet_unit() -> None:
    """UCUM is case-sensitive: G is giga, g is gram. g/L is refused, not read as G/L."""
    rejection = only_rejection(message(platelet_obx(unit="g/L")))
    assert rejection.reason is RejectReason.UNKNOWN_UNIT


def test_the_labs_own_flags_and_the_loinc_code_are_kept() -> None:
    result = only_result(message(platelet_obx(kind="SN", value="<^5", flags="LL~AA~<")))
    assert result.abnormal_flags == ("LL", "AA", "<")
    assert (result.code.system, result.code.code, result.code.display) == (
        "LN",
        "777-3",
        "Platelets",
    )


def test_a_replay_of_structured_numerics_pages_exactly_as_the_numeric_form(tmp_path: Path) -> None:
    from services.classifier.rules import load_rules
    from services.ingest.treatments import load_treatment_table
    from services.tools.replay import Summary, replay

    def oru(order: str, collected: str, obx: str) -> bytes:
        obr = OBR.replace("FL-77", order).replace("20261125074000", collected)
        return message(obx, obr=obr)

    def alerts(kind: str, values: list[str]) -> list[dict[str, object]]:
        path = tmp_path / f"{kind}.hl7"
        days = ["20261118074000", "20261121074000", "20261125074000"]
        path.write_bytes(
            b"\n".join(
                oru(f"FL-{n}", day, platelet_obx(kind=kind, value=value))
                for n, (day, value) in enumerate(zip(days, values, strict=True))
            )
        )
        summary = Summary()
        raised = list(replay([path], load_rules(), load_treatment_table(), CONTEXT, summary))
        assert summary.events == 3
        assert not summary.rejected
        return [a.model_dump(exclude={"raised_at", "event_id"}) for a in raised]

    structured = alerts("SN", ["^25", "<^5", "=^28"])
    assert structured == alerts("NM", ["25", "<5", "28"])
    assert {a["kind"] for a in structured} >= {"critical_low", "persistent_severe"}

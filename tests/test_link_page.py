"""The pages an action link opens: what it would do, a button, nothing more."""

from schemas import AckAction
from services.notifier.link_page import SECURITY_HEADERS, confirmation_page, refusal_page


def test_the_confirmation_shows_the_alert_and_one_button_posting_to_the_link() -> None:
    page = confirmation_page(AckAction.NOT_MY_PATIENT, "CRITICAL LOW platelets: 9 x10^9/L")
    assert "<p>CRITICAL LOW platelets: 9 x10^9/L</p>" in page
    assert '<form method="post"><button type="submit">Not my patient</button></form>' in page
    assert "<script" not in page
    assert "<link" not in page


def test_text_from_an_alert_cannot_become_markup() -> None:
    page = confirmation_page(AckAction.ACKNOWLEDGE, 'patient <script>alert("x")</script>')
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_a_refusal_says_why_and_what_to_do() -> None:
    page = refusal_page("the link has expired")
    assert "This link cannot be used: the link has expired." in page
    assert "call the laboratory" in page


def test_the_pages_load_and_run_nothing_and_cannot_be_framed() -> None:
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"

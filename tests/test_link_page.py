"""The pages around an action link: what was done, or why a link is refused."""

from schemas import AckAction
from services.notifier.web.views import SECURITY_HEADERS, done_page, refusal_page


def test_a_refusal_says_why_and_what_to_do() -> None:
    page = refusal_page("the link has expired")
    assert "This link cannot be used: the link has expired." in page
    assert "call the laboratory" in page


def test_done_says_what_happened_next() -> None:
    assert "the next on call is being paged" in done_page(AckAction.NOT_MY_PATIENT)


def test_the_pages_load_only_their_style_run_nothing_and_cannot_be_framed() -> None:
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "style-src 'self'" in policy
    assert "script-src" not in policy  # so default-src 'none' forbids every script
    assert "frame-ancestors 'none'" in policy
    assert SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"

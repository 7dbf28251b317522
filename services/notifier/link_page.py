"""The small HTML pages around an action link: what was done, or why a link is refused. Pure.

Opening a link (a GET, which mail scanners and link previews also do) changes nothing: it shows
the alert page (alert_page.py) with its buttons; pressing one posts to a link and lands here.
The pages load only their stylesheet (and the board its own small script), and cannot be
framed.
"""

from html import escape

from schemas import AckAction

_VERBS = {
    AckAction.ACKNOWLEDGE: ("Acknowledge", "Acknowledged: the escalation has stopped."),
    AckAction.NOT_MY_PATIENT: ("Not my patient", "Passed on: the next on call is being paged."),
    AckAction.RESOLVE: ("Resolve", "Resolved: the escalation has stopped."),
}

_POLICY = "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
SECURITY_HEADERS = {
    "Content-Security-Policy": _POLICY + "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the link's token is in its address
    "Cache-Control": "no-store",
}
BOARD_HEADERS = SECURITY_HEADERS | {  # its own refresh script, fetching the board: nothing else
    "Content-Security-Policy": _POLICY + "base-uri 'none'; script-src 'self'; connect-src 'self'"
}


def done_page(action: AckAction, reassigned_to: str | None = None) -> str:
    said = _VERBS[action][1]
    if reassigned_to is not None:
        said = f"Passed on: the {reassigned_to} on call is being paged."
    return page(_VERBS[action][0], f"<p>{escape(said)}</p>")


def refusal_page(reason: str) -> str:
    return page(
        "Link refused",
        f"<p>This link cannot be used: {escape(reason)}.</p>\n"
        "<p>Open the alert from a newer page, or call the laboratory.</p>",
    )


def page(heading: str, body: str, head: str = "", title: str | None = None) -> str:
    """A console page: its stylesheet, no inline script or style, readable on a phone;
    `title` for the browser tab where it should say more than the heading (never who the
    patient is: titles land in browser history and tab lists)."""
    return (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>PlateletWatch: {escape(title or heading)}</title>"
        f'<link rel="stylesheet" href="/v1/console.css">{head}</head>\n'
        f"<body>\n<main>\n<h1>{escape(heading)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )

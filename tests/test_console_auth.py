"""Console users, password hashes, sessions and CSRF tokens: pure, no server."""

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.cli import main
from services.notifier.web.auth import (
    ConsoleUsersError,
    hash_password,
    load_console_users,
    password_matches,
    session_from,
    start_session,
)
from services.tools.supervisor import DEMO_PASSWORD

SECRET = b"console-secret"
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
FAST = 1000  # iterations: the tests check the scheme, not its cost


def test_a_password_matches_its_hash_and_nothing_else() -> None:
    encoded = hash_password("correct horse", iterations=FAST)
    assert encoded.startswith("pbkdf2_sha256$1000$")
    assert "correct horse" not in encoded
    assert password_matches("correct horse", encoded)
    assert not password_matches("correct hors", encoded)
    assert hash_password("correct horse", iterations=FAST) != encoded  # salted
    for broken in (None, "", "plain", "md5$1$a$b", encoded + "$x", "pbkdf2_sha256$x$a$b"):
        assert not password_matches("correct horse", broken)


def test_the_users_file_says_who_sees_which_services(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    encoded = hash_password("pw", iterations=FAST)
    path.write_text(
        f"users:\n  - {{name: dr.ada, services: [adult], password_hash: '{encoded}'}}\n"
        "  - {name: dr.bo, services: [paediatric, adult]}\n"
    )
    users = load_console_users(path)
    assert users["dr.ada"].services == ("adult",)
    assert users["dr.bo"].password_hash is None  # signs in through the proxy only
    assert not password_matches("", users["dr.bo"].password_hash)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("{name: a, services: [adult]}\n  - {name: a, services: [adult]}", "a appears twice"),
        ("{name: a, services: [adult], password_hash: hunter2}", "not one `plateletwatch"),
        ("{name: a, services: []}", "services"),
        ("{name: a, services: [cardiology]}", "services"),
        ("{name: 'a b', services: [adult]}", "name"),
    ],
)
def test_a_bad_users_file_is_refused_saying_why(tmp_path: Path, entry: str, says: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(f"users:\n  - {entry}\n")
    with pytest.raises(ConsoleUsersError, match=says):
        load_console_users(path)


def test_a_session_is_signed_expires_and_carries_its_own_csrf_token() -> None:
    session = start_session(SECRET, "dr.ada", NOW, timedelta(hours=12))
    back = session_from(SECRET, session.token, NOW + timedelta(hours=11))
    assert back is not None
    assert back.user == "dr.ada"
    assert back.accepts(session.csrf_token)
    assert session.csrf_token not in session.token
    other = start_session(SECRET, "dr.ada", NOW, timedelta(hours=12))
    assert not back.accepts(other.csrf_token)  # another session's token does not do
    assert not back.accepts("")
    assert session_from(SECRET, session.token, NOW + timedelta(hours=12)) is None  # expired
    assert session_from(b"another-secret", session.token, NOW) is None
    body, _, signature = session.token.partition(".")
    assert session_from(SECRET, body[:-2] + "xx." + signature, NOW) is None
    assert session_from(SECRET, "garbage", NOW) is None


def test_a_session_survives_a_new_key_put_first_and_ends_with_its_key_dropped() -> None:
    session = start_session(SECRET, "dr.ada", NOW, timedelta(hours=12))
    assert session_from([b"new-console-key", SECRET], session.token, NOW) is not None
    assert session_from([b"new-console-key"], session.token, NOW) is None
    fresh = start_session([b"new-console-key", SECRET], "dr.ada", NOW, timedelta(hours=12))
    assert session_from(SECRET, fresh.token, NOW) is None  # signed with the first key


def test_hash_password_prints_a_hash_the_users_file_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("too short\n"))
    assert main(["hash-password"]) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase\n"))
    assert main(["hash-password"]) == 0
    encoded = capsys.readouterr().out.strip()
    path = tmp_path / "users.yaml"
    path.write_text(
        f"users:\n  - {{name: dr.ada, services: [adult], password_hash: '{encoded}'}}\n"
    )
    assert password_matches(
        "a long enough passphrase", load_console_users(path)["dr.ada"].password_hash
    )


def test_the_example_users_file_loads_and_its_demo_password_is_the_one_it_says() -> None:
    users = load_console_users(Path(__file__).parent.parent / "examples" / "console-users.yaml")
    assert sorted(users) == ["dr.adams", "dr.okafor", "haem.registrar"]
    assert password_matches(DEMO_PASSWORD, users["haem.registrar"].password_hash)
    assert users["haem.registrar"].services == ("paediatric", "adult")
    assert users["dr.adams"].password_hash is None

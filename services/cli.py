"""The `plateletwatch` command: one entry point for every service and tool.

A dispatcher: it parses the arguments, reads the settings and hands over to a service's
composition root or to a tool in services/tools/, printing a ConfigurationError instead of a
traceback (exit status 2).
"""

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from schemas.export import drifted_files, write_schemas
from services.build_info import describe as describe_release
from services.config import ConfigurationError, Settings
from services.kafka.admin import TopicMismatchError, ensure_topics
from services.kafka.client_logs import keep_patient_data_out_of_client_logs
from services.notifier.web.auth import MIN_PASSWORD_LENGTH, hash_password

EXIT_CONFIGURATION_ERROR = 2


def _bootstrap_servers(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise ConfigurationError(
            "KAFKA_BOOTSTRAP_SERVERS is not set. A single service needs a running broker; "
            "`plateletwatch run` starts everything, broker included."
        )
    return settings.kafka_bootstrap_servers


def _verified_bootstrap(settings: Settings) -> str:
    servers = _bootstrap_servers(settings)
    asyncio.run(ensure_topics(settings, servers, create=False))
    return servers


def _serve(app: object, settings: Settings, port: int) -> None:
    import uvicorn

    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=settings.bind_host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,  # access lines carry URLs; keep logs free of anything patient-shaped
    )


def cmd_ingest(settings: Settings) -> int:
    from services.ingest.app import create_app

    if not settings.ingest_api_tokens:
        raise ConfigurationError(
            "PLATELETWATCH_INGEST_API_TOKENS is not set (a JSON list of bearer tokens): "
            "the HTTP feeds would accept nobody"
        )
    servers = _verified_bootstrap(settings)
    _serve(create_app(settings, servers), settings, settings.ingest_port)
    return 0


def cmd_send(files: list[Path], destination: str) -> int:
    from services.tools.send import send_files

    return send_files(files, destination)


def cmd_classifier(settings: Settings) -> int:
    from services.classifier.app import run_classifier

    return run_classifier(settings, _verified_bootstrap(settings))


def cmd_notifier(settings: Settings) -> int:
    from services.notifier.app import create_app

    if settings.notifier_webhook_url is None and settings.notifier_roster_file is None:
        raise ConfigurationError(
            "neither PLATELETWATCH_NOTIFIER_ROSTER_FILE nor PLATELETWATCH_NOTIFIER_WEBHOOK_URL "
            "is set: pages would go nowhere"
        )
    servers = _verified_bootstrap(settings)
    try:
        app = create_app(settings, servers)
    except (OSError, ValueError, yaml.YAMLError) as error:  # roster or escalation policy
        raise ConfigurationError(f"unusable notifier configuration: {error}") from error
    _serve(app, settings, settings.notifier_port)
    return 0


def cmd_db_upgrade(settings: Settings) -> int:
    """Migrate the notifier's database to the newest revision, as the notifier does at start;
    a database made before migrations is stamped, not created again. 1 if it fails."""
    from sqlalchemy.exc import SQLAlchemyError

    from services.notifier.store.repository import NotifierStore

    async def upgrade() -> None:
        store = NotifierStore(settings.notifier_database_url)
        try:
            await store.start()
        finally:
            await store.stop()

    try:
        asyncio.run(upgrade())
    except (OSError, SQLAlchemyError) as error:
        print(f"plateletwatch db upgrade: {error}", file=sys.stderr)
        return 1
    print("the notifier's database is at the newest revision")
    return 0


def cmd_demo_pager(settings: Settings) -> int:
    from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver(settings.bind_host, settings.demo_receiver_port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        receiver.serve_forever()
    return 0


def cmd_run(settings: Settings) -> int:
    from services.tools.supervisor import run_everything

    return run_everything(settings)


def cmd_replay(files: list[Path], rules_file: Path | None) -> int:
    """Alerts as JSON lines on stdout, a summary on stderr; 2 when the arguments are unusable."""
    from services.tools.replay import replay_files

    return replay_files(files, rules_file)


def cmd_topics(settings: Settings) -> int:
    from services.tools.topics import create_topics

    return create_topics(settings, _bootstrap_servers(settings))


def cmd_hash_password() -> int:
    """The password is read without echo at a terminal, else as the first line of stdin."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("plateletwatch hash-password: the passwords differ", file=sys.stderr)
            return EXIT_CONFIGURATION_ERROR
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        print(
            f"plateletwatch hash-password: use at least {MIN_PASSWORD_LENGTH} characters",
            file=sys.stderr,
        )
        return EXIT_CONFIGURATION_ERROR
    print(hash_password(password))
    return 0


def cmd_schemas(check: bool) -> int:
    if check:
        drifted = drifted_files()
        if drifted:
            print(
                "JSON Schema files differ from the models: " + ", ".join(drifted), file=sys.stderr
            )
            print(
                "run `plateletwatch schemas` (or `make schemas`) and commit the result",
                file=sys.stderr,
            )
            return 1
        print("JSON Schema files match the models")
        return 0
    write_schemas()
    print("JSON Schema files written to schemas/json/")
    return 0


_SERVICES = {
    "run": (cmd_run, "everything on one machine: broker, topics, demo pager, all services"),
    "ingest": (cmd_ingest, "the ingest service (needs KAFKA_BOOTSTRAP_SERVERS)"),
    "classifier": (cmd_classifier, "the classifier worker (needs KAFKA_BOOTSTRAP_SERVERS)"),
    "notifier": (cmd_notifier, "the notifier service (needs KAFKA_BOOTSTRAP_SERVERS)"),
    "demo-pager": (cmd_demo_pager, "a loopback webhook receiver that shows pages"),
    "topics": (cmd_topics, "create missing topics and verify partition counts"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plateletwatch", description=__doc__)
    parser.add_argument("--version", action="version", version=describe_release())
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in _SERVICES.items():
        commands.add_parser(name, help=help_text)
    schemas = commands.add_parser("schemas", help="export JSON Schema files from the models")
    schemas.add_argument("--check", action="store_true", help="fail if the files have drifted")
    replay = commands.add_parser(
        "replay", help="run the classifier's rules over files, no broker; alerts as JSON lines"
    )
    replay.add_argument("files", nargs="+", type=Path, help="HL7 v2, FHIR JSON or NDJSON files")
    replay.add_argument("--rules", type=Path, help="rules YAML (default: the configured one)")
    commands.add_parser(
        "hash-password",
        help="read a console user's password (prompted, or from stdin) and print its hash "
        "for the console users file",
    )
    db = commands.add_parser("db", help="the notifier's database")
    db_actions = db.add_subparsers(dest="action", required=True)
    db_actions.add_parser(
        "upgrade", help="migrate it to the newest revision (the notifier does so at start)"
    )
    send = commands.add_parser("send", help="send HL7 v2 files over MLLP and print each ACK")
    send.add_argument("files", nargs="+", type=Path, help="files of one or more messages")
    send.add_argument("--to", required=True, metavar="HOST:PORT", help="the MLLP listener")
    args = parser.parse_args(argv)

    if args.command == "schemas":
        return cmd_schemas(args.check)
    if args.command == "replay":
        try:
            return cmd_replay(args.files, args.rules)
        except (ConfigurationError, ValidationError, FileNotFoundError) as error:
            print(f"plateletwatch replay: {error}", file=sys.stderr)
            return EXIT_CONFIGURATION_ERROR
    if args.command == "hash-password":
        return cmd_hash_password()
    if args.command == "send":
        try:
            return cmd_send(args.files, args.to)
        except (ConfigurationError, OSError) as error:
            print(f"plateletwatch send: {error}", file=sys.stderr)
            return EXIT_CONFIGURATION_ERROR
    try:
        settings = Settings()
    except (ValidationError, FileNotFoundError) as error:
        print(f"plateletwatch: invalid configuration: {error}", file=sys.stderr)
        return EXIT_CONFIGURATION_ERROR
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keep_patient_data_out_of_client_logs()
    if args.command == "db":
        return cmd_db_upgrade(settings)
    try:
        return _SERVICES[args.command][0](settings)
    except (ConfigurationError, TopicMismatchError) as error:
        print(f"plateletwatch {args.command}: {error}", file=sys.stderr)
        return EXIT_CONFIGURATION_ERROR


if __name__ == "__main__":
    sys.exit(main())

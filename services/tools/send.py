"""`plateletwatch send`: HL7 v2 files sent over MLLP, for testing a feed; each ACK printed."""

import asyncio
from pathlib import Path

from services.config import ConfigurationError
from services.ingest.hl7v2.message import Hl7ParseError, parse, split_messages
from services.ingest.hl7v2.mllp import send_messages


def send_files(files: list[Path], destination: str) -> int:
    """Send HL7 v2 files over MLLP and print each ACK; non-zero unless every ACK is AA.

    Raises ConfigurationError when `destination` is not HOST:PORT, OSError when the listener
    cannot be reached.
    """
    host, _, port = destination.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigurationError(f"--to {destination!r} is not HOST:PORT")
    all_accepted = True
    for path in files:
        messages = split_messages(path.read_bytes())
        if not messages:
            print(f"{path}: no HL7 message (no MSH segment) found")
            all_accepted = False
            continue
        acks = asyncio.run(send_messages(host, int(port), messages))
        for number, ack in enumerate(acks, start=1):
            try:
                parsed = parse(ack)
            except Hl7ParseError:
                print(f"{path} #{number}: unreadable ACK {ack[:60]!r}")
                all_accepted = False
                continue
            msa = parsed.first("MSA")
            code = msa.get(1) if msa else "??"
            errors = [err.get(8) or err.get(3, 2) for err in parsed.all("ERR")]
            print(f"{path} #{number}: {code} {msa.get(2) if msa else ''}".rstrip())
            for error in errors:
                print(f"    ERR {error}")
            all_accepted = all_accepted and code == "AA"
    return 0 if all_accepted else 1

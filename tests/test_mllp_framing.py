"""MLLP framing: frames split across reads, several per read, noise between them, size limit."""

import hashlib

from services.ingest.deadletter import KEPT_BYTES_WHEN_TOO_LARGE, RawInput
from services.ingest.hl7v2.mllp import MllpDecoder, frame


def test_a_frame_split_across_reads() -> None:
    decoder = MllpDecoder(max_message_bytes=1024)
    data = frame(b"MSH|one")
    assert decoder.feed(data[:3]) == []
    assert decoder.in_frame
    assert decoder.feed(data[3:-1]) == []
    assert decoder.feed(data[-1:]) == [b"MSH|one"]
    assert not decoder.in_frame


def test_several_frames_in_one_read_and_noise_between_them() -> None:
    decoder = MllpDecoder(max_message_bytes=1024)
    data = b"noise" + frame(b"MSH|one") + b"\r\n" + frame(b"MSH|two") + frame(b"MSH|th")
    assert decoder.feed(data + b"\x0bMSH|partial") == [b"MSH|one", b"MSH|two", b"MSH|th"]
    assert decoder.feed(b"\x1c\r") == [b"MSH|partial"]


def test_a_frame_larger_than_the_limit_is_skipped_to_its_end_and_reported() -> None:
    decoder = MllpDecoder(max_message_bytes=100)
    body = b"MSH|" + b"x" * 200_000
    data = frame(body) + frame(b"MSH|next")
    received: list[bytes | RawInput] = []
    for i in range(0, len(data), 4097):  # the end block may be split between reads
        received.extend(decoder.feed(data[i : i + 4097]))
    oversized = RawInput(
        body[:KEPT_BYTES_WHEN_TOO_LARGE], len(body), hashlib.sha256(body).hexdigest()
    )
    assert received == [oversized, b"MSH|next"]  # the stream is still in step
    assert len(decoder._buffer) == 0


def test_an_oversized_frame_arriving_whole_is_reported_too() -> None:
    (oversized,) = MllpDecoder(max_message_bytes=100).feed(frame(b"y" * 101))
    assert oversized == RawInput(b"y" * 101, 101, hashlib.sha256(b"y" * 101).hexdigest())


def test_what_an_unfinished_oversized_frame_holds_is_bounded() -> None:
    decoder = MllpDecoder(max_message_bytes=1024)
    decoder.feed(b"\x0b")
    for _ in range(100):
        assert decoder.feed(b"z" * 65536) == []
    assert decoder.in_frame
    assert len(decoder._buffer) <= 1

"""MLLP framing: frames split across reads, several per read, noise between them, size limit."""

import pytest

from services.ingest.mllp import FrameTooLargeError, MllpDecoder, frame


def test_a_frame_split_across_reads() -> None:
    decoder = MllpDecoder(max_message_bytes=1024)
    data = frame(b"MSH|one")
    assert decoder.feed(data[:3]) == []
    assert decoder.feed(data[3:-1]) == []
    assert decoder.feed(data[-1:]) == [b"MSH|one"]


def test_several_frames_in_one_read_and_noise_between_them() -> None:
    decoder = MllpDecoder(max_message_bytes=1024)
    data = b"noise" + frame(b"MSH|one") + b"\r\n" + frame(b"MSH|two") + frame(b"MSH|th")
    assert decoder.feed(data + b"\x0bMSH|partial") == [b"MSH|one", b"MSH|two", b"MSH|th"]
    assert decoder.feed(b"\x1c\r") == [b"MSH|partial"]


def test_a_frame_larger_than_the_limit_is_refused_before_it_ends() -> None:
    decoder = MllpDecoder(max_message_bytes=100)
    decoder.feed(b"\x0b" + b"x" * 100)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"x")
    with pytest.raises(FrameTooLargeError):
        MllpDecoder(max_message_bytes=100).feed(frame(b"y" * 101))

"""The message schema and its journal codec."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
import pytest

from tests.messages_sample import SAMPLE, SAMPLE_V1, read
from trader import messages
from trader.messages import AnyMessage, BarClosed, Message, decode, encode

SAMPLE_FILE = Path(__file__).parent / "data" / "journal_v1.msgpack"


def test_the_sample_covers_every_message_type() -> None:
    """Adding a message type without adding it to the journal sample fails here."""
    declared = set(typing.get_args(AnyMessage))
    assert {type(m) for m in SAMPLE} == declared


@pytest.mark.parametrize("msg", SAMPLE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_the_journal_codec(msg: Message) -> None:
    """Encoding then decoding gives back an equal message of the same type."""
    back = decode(encode(msg))
    assert type(back) is type(msg)
    assert back == msg


def test_a_checked_in_journal_of_schema_v1_still_decodes() -> None:
    """Journals written by earlier code stay readable (append-only schema evolution)."""
    records = read(SAMPLE_FILE)
    assert [decode(r) for r in records] == SAMPLE_V1


def test_messages_are_immutable() -> None:
    """A message cannot be changed after it is sent, so a fan-out shares it safely."""
    bar = SAMPLE[0]
    assert isinstance(bar, BarClosed)
    with pytest.raises(AttributeError):
        bar.close = 1.0  # type: ignore[misc]


def test_an_unknown_tag_is_a_decode_error() -> None:
    """A record of a type this code does not know is refused, not misread."""
    bogus = msgspec.msgpack.encode({"type": "NoSuchMessage", "ts_ns": 1})
    with pytest.raises(msgspec.ValidationError):
        decode(bogus)


def test_every_message_carries_ts_ns_as_an_int() -> None:
    """Time inside the graph is integer UTC nanoseconds on every message."""
    for cls in typing.get_args(messages.AnyMessage):
        hints = typing.get_type_hints(cls)
        assert hints["ts_ns"] is int, cls

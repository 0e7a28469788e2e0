"""The log reader: the four shapes of a ConfigMgr log give the same records, streamed."""

from __future__ import annotations

import codecs
import tracemalloc
from pathlib import Path

import pytest

from cmrunbook.logs.cmtrace import (
    CMTraceStream,
    LogFormatError,
    Record,
    open_log,
    read_bytes,
    read_text,
)

DATA = Path(__file__).resolve().parents[1] / "data"
KB2910552 = DATA / "kb2910552_smsts.log"  # copied from the KB as printed (viewer form)


def cmtrace_line(rec: Record, *, time: str = "09:49:27.353+420", date: str = "10-31-2013") -> str:
    """A record written back as ConfigMgr writes it (CMTrace), with a real date and time."""
    comp = rec.component or "TSManager"
    thread = rec.thread or 3048
    return (
        f'<![LOG[{rec.message}]LOG]!><time="{time}" date="{date}" component="{comp}" '
        f'context="" type="{rec.type}" thread="{thread}" file="bootimage.cpp:621">'
    )


def sms2007_line(rec: Record) -> str:
    """A record written as a 2007 site server writes it (line breaks inside become '~')."""
    comp = rec.component or "TSManager"
    thread = rec.thread or 3048
    msg = rec.message.replace("\n", "~")
    return (
        f"{msg}~  $$<{comp}><Thu Oct 31 09:49:27.353 2013 Pacific Standard Time>"
        f"<thread={thread} (0x{thread:X})>"
    )


def test_kb_viewer_lines_become_records_with_multi_line_messages() -> None:
    reader = open_log(KB2910552)
    records = list(reader)
    assert reader.format == "viewer"
    assert reader.lines == 17
    assert len(records) == 13
    first = records[0]
    assert (first.message, first.component, first.thread, first.time) == (
        "Installing boot image to hard drive",
        "TSManager",
        3048,
        "datetime",
    )
    two = records[8]
    assert (two.first_line, two.last_line) == (9, 10)
    assert two.message == (
        "Failed to install boot image.\n"
        "is not a valid Win32 application. (Error: 800700C1; Source: Windows)"
    )
    assert two.type == 3
    assert records[5].message.endswith('bootsect.exe" /NT60 SYS /MBR')


def test_forum_viewer_line_with_a_real_date() -> None:
    rec = read_text(
        'Executing command line: "C:_SMSTaskSequence\\WinPE\\SMS\\bin\\i386\\bootsect.exe" '
        "/NT60 SYS /MBR TSManager 10/31/2013 9:49:27 AM 3000 (0x0BB8)\n"
    )[0]
    assert rec.component == "TSManager"
    assert rec.thread == 3000
    assert rec.when == "10/31/2013 9:49:27 AM"
    assert rec.timestamp is not None and rec.timestamp.isoformat() == "2013-10-31T09:49:27"


def test_tab_separated_viewer_copy() -> None:
    rec = read_text(
        "Failed to install WinPE. Code(0x80004005)\tTSManager\t3/4/2011 10:00:01 PM\t844 (0x034C)\n"
    )[0]
    assert (rec.message, rec.component, rec.thread) == (
        "Failed to install WinPE. Code(0x80004005)",
        "TSManager",
        844,
    )


def test_a_sentence_ending_in_a_number_is_not_a_trailer() -> None:
    # The decimal and hex thread ids must agree: "12 (0x1)" is text, not a thread.
    recs = read_text("copied 12 (0x1)\n")
    assert recs[0].component is None and recs[0].message == "copied 12 (0x1)"


def test_cmtrace_records_same_messages_as_viewer_form() -> None:
    viewer = list(open_log(KB2910552))
    text = "\r\n".join(cmtrace_line(r) for r in viewer).replace("\n", "\r\n").replace("\r\r", "\r")
    records = read_text(text)
    assert [r.message for r in records] == [r.message for r in viewer]
    assert records[8].first_line == 9 and records[8].last_line == 10
    ts = records[0].timestamp
    assert ts is not None and ts.isoformat() == "2013-10-31T09:49:27.353000-07:00"
    assert records[0].source == "bootimage.cpp:621"


def test_sms2007_form_gives_the_same_messages() -> None:
    viewer = list(open_log(KB2910552))
    records = read_text("\n".join(sms2007_line(r) for r in viewer) + "\n")
    assert [r.message for r in records] == [r.message for r in viewer]
    assert records[0].component == "TSManager" and records[0].thread == 3048
    ts = records[0].timestamp
    assert ts is not None and ts.isoformat() == "2013-10-31T09:49:27.353000"


def test_sms2007_message_over_several_physical_lines() -> None:
    text = (
        "Failed to install boot image.\n"
        "is not a valid Win32 application.~  $$<TSManager><Thu Oct 31 09:49:27.353 2013 "
        "Pacific Standard Time><thread=3048 (0xBE8)>\n"
        "next~  $$<TSManager><10-31-2013 09:49:28.000+420><thread=3048 (0xBE8)>\n"
    )
    recs = read_text(text)
    assert recs[0].message == "Failed to install boot image.\nis not a valid Win32 application."
    assert (recs[0].first_line, recs[0].last_line) == (1, 2)
    assert recs[1].message == "next" and recs[1].first_line == 3
    ts = recs[1].timestamp
    assert ts is not None and ts.isoformat() == "2013-10-31T09:49:28-07:00"


def test_plain_text_is_one_record_per_line() -> None:
    recs = list(open_log(DATA / "kb930011_OSDLaunch.log"))
    assert [r.first_line for r in recs] == [1, 2, 3, 4, 5, 6]
    assert recs[1].message == "Failed to create/open shared environment (800700B7)"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le-nobom", "cp1252"])
def test_encodings(tmp_path: Path, encoding: str) -> None:
    text = (
        '<![LOG[Prüfe Paket “C0100012”]LOG]!><time="09:33:52.353+420" date="10-31-2013" '
        'component="TSManager" context="" type="1" thread="4856" file="x.cpp:1">\r\n'
    )
    if encoding == "utf-16-le-nobom":
        data = text.encode("utf-16-le")
    elif encoding == "cp1252":
        data = text.replace("“", '"').replace("”", '"').encode("cp1252")
    else:
        data = text.encode(encoding)
    path = tmp_path / "smsts.log"
    path.write_bytes(data)
    reader = open_log(path)
    recs = list(reader)
    assert reader.format == "cmtrace"
    assert len(recs) == 1 and recs[0].message.startswith("Prüfe Paket")


def test_binary_content_is_refused_clearly() -> None:
    with pytest.raises(LogFormatError, match="binary"):
        read_bytes(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" * 500)


def test_incremental_feed_gives_the_same_records_whatever_the_chunking() -> None:
    viewer = list(open_log(KB2910552))
    text = "\r\n".join(cmtrace_line(r) for r in viewer) + "\r\n"
    whole = read_text(text)
    for size in (1, 7, 64, 4096):
        stream = CMTraceStream("cmtrace")
        got: list[Record] = []
        for i in range(0, len(text), size):
            got += stream.feed(text[i : i + size])
        got += stream.flush()
        assert got == whole, size


def test_feed_keeps_an_open_record_until_it_is_closed() -> None:
    stream = CMTraceStream("cmtrace")
    assert stream.feed("<![LOG[Failed to install boot image.\r\n") == []
    assert stream.feed("is not a valid Win32 application.]LOG]!><time=") == []
    done = stream.feed(
        '"09:33:52.353+420" date="10-31-2013" component="TSManager" type="3" thread="1">\r\n'
    )
    assert len(done) == 1 and done[0].first_line == 1 and done[0].last_line == 2
    assert done[0].type == 3
    assert stream.flush() == []


def test_feed_bytes_handles_a_character_split_between_reads() -> None:
    data = codecs.BOM_UTF16_LE + "Prüfung läuft\r\nzweite Zeile\r\n".encode("utf-16-le")
    stream = CMTraceStream()
    got: list[Record] = []
    for i in range(0, len(data), 3):
        got += stream.feed_bytes(data[i : i + 3])
    got += stream.flush()
    assert [r.message for r in got] == ["Prüfung läuft", "zweite Zeile"]


def test_unclosed_record_at_the_end_is_kept_as_text() -> None:
    recs = read_text("<![LOG[half a record that never ends\n")
    assert recs[0].message == "<![LOG[half a record that never ends"


def _stream_log(path: Path, size: int) -> tuple[int, int, Record | None, int]:
    """Write a CMTrace log of about `size` bytes ending in a two-line error record, stream it,
    and return (records, peak bytes allocated while reading, the last record, lines read)."""
    line = (
        b"<![LOG[Set a global environment variable _SMSTSNextInstructionPointer=12]LOG]!>"
        b'<time="09:33:52.353+420" date="10-31-2013" component="TSManager" context="" '
        b'type="1" thread="4856" file="executionenv.cxx:668">\r\n'
    )
    with path.open("wb") as f:
        f.write(line * (size // len(line)))
        f.write(
            b"<![LOG[Failed to install boot image.\r\nmulti]LOG]!>"
            b'<time="1" date="2" component="x" type="3" thread="1">\r\n'
        )
    tracemalloc.start()
    try:
        reader = open_log(path)
        count, last = 0, None
        for rec in reader:
            count += 1
            last = rec
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        reader._raw.close()
    assert count == size // len(line) + 1
    return count, peak, last, reader.lines


def test_a_log_streams_in_memory_that_does_not_grow_with_its_size(tmp_path: Path) -> None:
    """A 16 MB smsts.log (its rollover size) is read record by record: the reader's peak memory
    for a log four times larger is the same, so no size of log can exhaust the jump host."""
    _, small_peak, _, _ = _stream_log(tmp_path / "small.log", 1 << 20)
    count, large_peak, last, lines = _stream_log(tmp_path / "large.log", 4 << 20)
    assert last is not None and last.type == 3 and last.last_line == last.first_line + 1
    assert lines == count + 1
    assert large_peak < small_peak * 1.25 + (256 << 10), (small_peak, large_peak)

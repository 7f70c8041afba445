"""The readers and the writer of records (br/records.py), on real files, with no server.

A JSON list and JSONL give the same records the same way; what JSON cannot carry through the
pipeline is one line naming the record.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from br.cli import UserError
from br.records import BLOCK, RecordWriter, dumps, iter_jsonl, iter_records

RECORDS: list[dict[str, Any]] = [
    {"id": 1, "title": "Zürich", "big": 12345678901234567890123, "nested": {"a": [1, 2.5]}},
    {"id": 2, "title": "line\u2028separator", "none": None, "flag": True},
]


def as_list(path: Path, records: list[Any]) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def as_jsonl(path: Path, records: list[Any]) -> Path:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path.write_text(lines, encoding="utf-8")
    return path


def test_a_json_list_and_jsonl_give_the_same_records(tmp_path: Path) -> None:
    listed = list(iter_records(as_list(tmp_path / "d.json", RECORDS)))
    lined = list(iter_records(as_jsonl(tmp_path / "d.jsonl", RECORDS)))
    assert listed == lined == RECORDS
    assert isinstance(listed[0]["big"], int)  # integers of any size stay exact
    assert list(iter_records(as_list(tmp_path / "e.json", []))) == []


def test_a_bom_and_blank_lines_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"id": 1}\n\n  \n{"id": 2}\n')
    assert list(iter_records(path)) == [{"id": 1}, {"id": 2}]
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'[{"id": 1}]')
    assert list(iter_records(path)) == [{"id": 1}]


def test_a_record_longer_than_a_block_is_read_whole(tmp_path: Path) -> None:
    records = [{"id": i, "text": "x" * (BLOCK + 17 * i), "n": 10**30 + i} for i in range(3)]
    assert list(iter_records(as_list(tmp_path / "d.json", records))) == records


def test_numbers_beyond_a_double_are_kept_as_written(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": 1, "huge": 1e400, "tiny": 1e-400, "x": 0.1}\n')
    (record,) = iter_records(path)
    assert dumps(record) == '{"id":1,"huge":1e400,"tiny":1e-400,"x":0.1}'


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"id": 1, "x": NaN}\n', ["d.jsonl:1", "NaN", "not JSON"]),
        ('{"id": 1}\n{"id": 2, "t": "\\ud800"}\n', ["d.jsonl:2", "lone UTF-16 surrogate"]),
        ('{"id": 1}\n{"id": \n', ["d.jsonl:2", "not valid JSON"]),
        ("[1, 2]\n", ["record 0 is a list, not an object"]),
    ],
)
def test_what_jsonl_cannot_carry_is_one_line(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        list(iter_records(path))
    assert "\n" not in str(e.value)
    for word in words:
        assert word in str(e.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"id": 1}', ["must hold a JSON list of objects, not a JSON object"]),
        ('[{"id": 1},\n {"id": 2} {"id": 3}]', ["line 2", "after record 1"]),
        ('[{"id": 1}] [2]', ["Extra data after the list"]),
        ('[{"id": 1}, {"x": Infinity}]', ["record 1", "Infinity"]),
        ('[{"id": 1}, "text"]', ["record 1 is a str, not an object"]),
    ],
)
def test_what_a_json_list_cannot_carry_is_one_line(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        list(iter_records(path))
    for word in words:
        assert word in str(e.value)


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"t": "café"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"not UTF-8 text \(line 1: byte 0xe9\)"):
        list(iter_records(latin))
    utf16 = tmp_path / "wide.json"
    utf16.write_bytes('[{"t": 1}]'.encode("utf-16"))
    with pytest.raises(UserError, match="looks like UTF-16"):
        list(iter_records(utf16))


def test_a_missing_input_or_a_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist; set INPUT"):
        list(iter_records(tmp_path / "nope.json"))
    with pytest.raises(UserError, match="is a directory"):
        list(iter_records(tmp_path))


def test_the_writer_keeps_the_input_format(tmp_path: Path) -> None:
    for jsonl, name in ((False, "out.json"), (True, "out.jsonl")):
        buffer = io.StringIO()
        writer = RecordWriter(buffer, jsonl)
        for record in RECORDS:
            writer.write(record)
        writer.close()
        path = tmp_path / name
        path.write_text(buffer.getvalue(), encoding="utf-8")
        assert list(iter_records(path)) == RECORDS
        if jsonl:
            assert list(iter_jsonl(path)) == RECORDS
        else:
            assert json.loads(buffer.getvalue()) == RECORDS
    empty = io.StringIO()
    RecordWriter(empty, False).close()
    assert empty.getvalue() == "[]\n"
    many = [{"i": i} for i in range(2500)]  # past the writer's thousand-record writes
    for jsonl, text in (
        (False, "[\n" + ",\n".join(map(dumps, many)) + "\n]\n"),
        (True, "".join(dumps(r) + "\n" for r in many)),
    ):
        buffer = io.StringIO()
        writer = RecordWriter(buffer, jsonl)
        for record in many:
            writer.write(record)
        writer.close()
        assert buffer.getvalue() == text


def test_fast_dumps_writes_the_bytes_dumps_writes() -> None:
    """orjson writes small floats in its own form (1e-7, 0.00001): those, what it refuses
    (non-string keys, integers past 64 bits, lone surrogates, subclasses) and everything else
    come out as json writes them, so merged.json and answers/ keep their bytes."""
    import random
    import struct

    from br.records import fast_dumps

    rng = random.Random(25)
    floats = [0.0, -0.0, 1e-5, -1e-7, 5e-324, 1e-4, 0.00012, 1e15, 1e16, 1e22, 0.1, 2.5]
    floats += [rng.random() * 10 ** rng.randint(-12, 20) for _ in range(20_000)]
    floats += [round(rng.uniform(-1e3, 1e3), rng.randint(0, 8)) for _ in range(20_000)]
    bits = (struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(20_000))
    floats += [x for x in bits if x == x and abs(x) != float("inf")]
    text = "".join(map(chr, range(0x80))) + "é\u2028\u2029\ud7ff\ue000\uffff\U0001f600"

    class Text(str):
        pass

    values: list[Any] = [floats, *floats[:2000]]
    values += [{"a": [x, {"b": x}], "s": f"{x}e-5 0.0000 {text}"} for x in floats[:3000]]
    values += [{1: "a"}, [2**64, -(2**63) - 1, 2**63 - 1], "\ud800", Text("t"), (1, [True, None])]
    values += [{"custom_id": "e-1", "n": "0.00001", "x": [1e-5], "y": 3}, 1e-5, 0.00001]
    for value in values:
        assert fast_dumps(value) == dumps(value)


def test_after_a_nan_is_read_fast_dumps_writes_it_as_dumps_does() -> None:
    """orjson writes NaN and Infinity as null; once a provider's line or float32 bytes gave one
    (records.saw_nonfinite), rows are written as json writes them, as before."""
    from br.batches.openai import parse_line
    from br.records import fast_dumps

    assert fast_dumps({"a": [0.5, 1]}) == '{"a":[0.5,1]}'
    assert fast_dumps([float("nan")]) == "[null]"  # orjson's; never given one unnoted
    line = parse_line(b'{"custom_id": "r1", "usage": {"t": NaN}}', 1)
    assert fast_dumps(line) == dumps(line) == '{"custom_id":"r1","usage":{"t":NaN}}'


def test_float32_bytes_that_hold_a_nan_are_noted() -> None:
    import base64
    import struct

    from br.batches.openai import vector
    from br.records import fast_dumps

    finite = vector(base64.b64encode(struct.pack("<2f", 0.5, 2.0)).decode())
    assert fast_dumps(finite) == "[0.5,2.0]" and fast_dumps([float("inf")]) == "[null]"
    odd = vector(base64.b64encode(struct.pack("<2f", 0.5, float("nan"))).decode())
    assert fast_dumps(odd) == dumps(odd) == "[0.5,NaN]"

"""serving/filters.py: the filter grammar accepts the expressions it documents, re-renders them, and refuses
everything else with the token and its position."""

from __future__ import annotations

import pytest

from serving.filters import FIELDS, MAX_DEPTH, MAX_IN, MAX_LENGTH, FilterError, parse_filter


@pytest.mark.parametrize("text, rendered", [
    ('split == "test"', 'split == "test"'),
    ("source != 'msrvtt'", 'source != "msrvtt"'),
    ("duration >= 30 and start < 1.5e1", "duration >= 30.0 and start < 15.0"),
    ("end <= -1 or ingest_time > 1700000000", "end <= -1.0 or ingest_time > 1700000000"),
    ('modalities in ["v", "a"]', 'modalities in ["v", "a"]'),
    ('not (item_id == "a" or item_id == "b") and split == "x"',
     'not ((item_id == "a" or item_id == "b")) and split == "x"'),
    ('split == "it\\"s"', 'split == "it\\"s"'),
    ('split == "café ✓"', 'split == "café ✓"'),
    ("  ", ""),
    ("", ""),
])
def test_accepted_filters_are_rendered_from_the_parse(text, rendered):
    assert parse_filter(text) == rendered


def test_every_field_is_accepted():
    for name, kind in FIELDS.items():
        value = '"x"' if kind == "string" else "1"
        assert parse_filter(f"{name} == {value}") == f"{name} == {value if kind != 'number' else '1.0'}"


@pytest.mark.parametrize("text, message", [
    ('split == "a" or 1==1) --', "unexpected character '-' (U+002D) at position 22"),  # tokenized first
    ('split == "a" or 1==1)', "expected a field name at position 16, got number '1'"),
    ('split == "a") or (1 == 1', "expected 'and', 'or' or the end of the filter at position 12, got ')'"),
    ('content_hash == "imported"', "unknown field 'content_hash' at position 0"),
    ('media_uri like "%x"', "unknown field 'media_uri' at position 0"),
    ('meta["a"] == 1', "unknown field 'meta' at position 0"),
    ('json_contains(split, "a")', "unknown field 'json_contains' at position 0"),
    ('split == "a" && end > 1', "unexpected character '&' (U+0026) at position 13"),
    ('split == "a" || 1', "unexpected character '|' (U+007C) at position 13"),
    ("split == a", "field split takes a string, got 'a' at position 9"),
    ('duration > "3"', "field duration takes a number, got string '3' at position 11"),
    ("ingest_time > 1.5", "field ingest_time takes an integer, got number '1.5' at position 14"),
    ("duration > 1e999", "out of range for field duration"),
    ("ingest_time > 99999999999999999999", "out of range for field ingest_time"),
    ('split == "abc', "string opened at position 9 is not closed"),
    ("split == 'a\" or \"1\"=='1'", "string opened at position 23 is not closed"),  # the first quote pair is one string
    ('split == "a\\u0022"', "escape '\\\\u' at position 11"),
    ('((split == "a")', "expected ')' at position 15, got the end of the filter"),
    ('split == "a"))', "position 12, got ')'"),
    ("split ==", "field split takes a string, got the end of the filter at position 8"),
    ("and", "expected a field name at position 0, got 'and'"),
    ("SPLIT == 'a'", "unknown field 'SPLIT'"),
    ('split == "a" AND end > 0', "position 13, got 'AND'"),
    ("\u0455plit == 'a'", "unexpected character 'ѕ' (U+0455) at position 0"),  # Cyrillic dze
    ("ｓplit == 'a'", "unexpected character 'ｓ' (U+FF53) at position 0"),  # fullwidth s
    ("split\u200b == 'a'", "U+200B) at position 5"),
    ("split == 'a\u202e'", "U+202E (Cf)"),  # right-to-left override inside a string
    ("split == 'a\nb'", "U+000A (Cc)"),
    ("split == 'a'; drop", "unexpected character ';'"),
    ("split in []", "field split takes a string, got ']' at position 10"),
    ("split in ['a',]", "field split takes a string, got ']'"),
    ("split in 'a'", "expected '[' at position 9"),
])
def test_hostile_or_malformed_filters_are_refused_with_the_token_and_position(text, message):
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    assert message in str(info.value)


def test_long_input_huge_lists_and_deep_nesting_are_refused():
    with pytest.raises(FilterError, match=f"{MAX_LENGTH + 1} characters, at most {MAX_LENGTH}"):
        parse_filter("x" * (MAX_LENGTH + 1))
    with pytest.raises(FilterError, match="characters, at most"):
        parse_filter("start in [" + ",".join(["1"] * 100_000) + "]")
    ok = "start in [" + ",".join(["1"] * MAX_IN) + "]"
    assert len(ok) <= MAX_LENGTH and parse_filter(ok).count("1.0") == MAX_IN
    with pytest.raises(FilterError, match=f"over {MAX_IN} values"):
        parse_filter("start in [" + ",".join(["1"] * (MAX_IN + 1)) + "]")
    assert parse_filter("(" * MAX_DEPTH + "end > 0" + ")" * MAX_DEPTH).startswith("(" * MAX_DEPTH)
    with pytest.raises(FilterError, match=f"nesting deeper than {MAX_DEPTH} at position {MAX_DEPTH}"):
        parse_filter("(" * (MAX_DEPTH + 1) + "end > 0" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(FilterError, match="nesting deeper"):
        parse_filter("not " * 500 + "end > 0")


def test_a_non_string_is_refused():
    with pytest.raises(FilterError, match="expected a string, got int"):
        parse_filter(5)

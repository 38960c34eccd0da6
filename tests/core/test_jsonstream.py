"""The bounded JSON reader on its own (triage_core/jsonstream.py): which member holds the records,
one ticket object, the errors that name where they are, and values cut across reads.

Every document is read through a ``read`` that hands out a few characters at a time, so that each
value, string and escape also straddles the reader's buffer refills; the reader-level tests
(test_ticket_reader.py, test_reader_edges.py, test_reader_properties.py) cover the formats.
"""

from __future__ import annotations

import itertools

import pytest

from triage_core.jsonstream import Element, JsonRecords, JsonStructureError
from triage_core.textstream import TextFormatError


def pieces(text: str, size: int):
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    it = iter(chunks)
    return lambda _n: next(it, "")


def read(text: str, size: int = 3, max_chars: int = 1000, keep=(), capture=("id", "text")):
    doc = JsonRecords(pieces(text, size), max_chars, keep, capture=capture)
    return doc, list(doc)


@pytest.mark.parametrize("size", [1, 3, 1 << 20])
def test_records_under_a_known_name_in_any_case_after_other_arrays(size: int) -> None:
    doc, elements = read('{"tags": ["x", "y"], "Tickets": [{"id": 1, "text": "a"}, "b"], "next": null}', size)
    assert elements == [Element({"id": 1, "text": "a"}), Element("b")]
    assert (doc.records_key, doc.top_level, doc.members) == ("Tickets", "object", {})


def test_one_ticket_object_is_one_element_of_its_ticket_fields() -> None:
    doc, elements = read('{"id": 7, "Text": "card \\ud83d", "tags": ["a"], "meta": {"x": [1]}}')
    assert elements == [Element({"id": 7, "Text": "card \ud83d"}, None, "", True)]
    assert doc.records_key == "" and doc.captured == {"id": 7, "Text": "card \ud83d"}
    _, plain = read('{"text": "card"}')
    assert plain == [Element({"text": "card"}, None, "", False)]


def test_kept_members_are_decoded_and_wrapper_arrays_still_read() -> None:
    doc, elements = read('{"parameters": {"top_k": 2}, "inputs": ["a", "b"]}', keep=("parameters", "inputs"))
    assert elements == [Element("a"), Element("b")]
    assert doc.members == {"parameters": {"top_k": 2}} and doc.records_key == "inputs"
    doc, elements = read('{"inputs": "one text"}', keep=("inputs",))
    assert elements == [] and doc.members == {"inputs": "one text"} and doc.records_key is None


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '{"tickets": [], "results": [{"id": 1}]}',
            "a second array of records, 'results' (line 1), after 'tickets': "
            "which one holds the tickets is ambiguous",
        ),
        (
            '{"count": 3, "a": [1], "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9, '
            '"j": 10, "k": 11}',
            "(its members: 'count', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i')",
        ),
        ('{"tickets": [{"id": 1}]', "the JSON object ends without '}': the data is truncated"),
        ('{"a" 1}', "expected ':' after 'a' at line 1"),
        ("{\n\n5: 1}", "expected a member name at line 3"),
        ('{"a":', "the JSON object ends without '}': the data is truncated"),
        (
            '{"parameters": {"x": tru}}',
            "member 'parameters' at line 1: invalid JSON: Expecting value (line 1)",
        ),
        ("[1, 2", "the JSON array ends without ']': the data is truncated (line 1)"),
        ("[1]\n\n x", "unexpected data after the JSON document at line 3: the records after it are not read"),
        ("  5", "found '5' at line 1"),
    ],
)
def test_what_is_wrong_with_a_document_is_said_with_where(text: str, message: str) -> None:
    with pytest.raises(JsonStructureError) as err:
        read(text, keep=("parameters",))
    assert message in str(err.value)


def test_an_object_with_no_records_lists_its_first_ten_members_and_the_known_names() -> None:
    with pytest.raises(JsonStructureError) as err:
        read('{"columns": ["id", "text"], "n": 2}')
    message = str(err.value)
    assert message.endswith("and no ticket field (its members: 'columns', 'n')")
    assert "'tickets'" in message and "'instances'" in message


def test_an_invalid_ticket_field_makes_the_one_ticket_an_error() -> None:
    _, elements = read('{"id": 1, "text": [1, }}')
    assert len(elements) == 1 and elements[0].value is None
    assert elements[0].error.startswith("member 'text': invalid JSON: ")


@pytest.mark.parametrize("size", [1, 2, 5, 64])
def test_invalid_elements_keep_their_extent_and_the_next_element_is_read(size: int) -> None:
    text = (
        '[{"id": "a]}\\"", "text": tru},\n{"id": "b",\n "text": tru\n}, '
        '{"id": "c", "text": "ok"}, 12, -3.5e2]'
    )
    _, elements = read(text, size)
    assert [e.value for e in elements] == [None, None, {"id": "c", "text": "ok"}, 12, -350.0]
    assert elements[0].error == "invalid JSON: Expecting value (line 1)"
    assert elements[0].raw == '{"id": "a]}\\"", "text": tru}'
    assert elements[1].error == "invalid JSON: Expecting value (lines 2-4)"
    assert elements[1].raw.startswith('{"id": "b"')


@pytest.mark.parametrize("size", [1, 4, 1 << 20])
def test_oversized_elements_and_members_are_skipped_without_losing_the_next(size: int) -> None:
    big = '{"id": "big", "text": "' + 'x]}\\"[{' * 40 + '"}'
    text = (
        '{"junk": {"a": "}]\\"{[", "b": [1, {"c": "]"}]}, "tickets": ['
        + big
        + ', "'
        + "y" * 300
        + '", 123456789, {"id": 2, "text": "t"}]}'
    )
    _, elements = read(text, size, max_chars=100)
    assert [e.error for e in elements] == ["record is larger than 100 characters"] * 2 + [None, None]
    assert [e.value for e in elements[2:]] == [123456789, {"id": 2, "text": "t"}]


def test_values_cut_at_the_end_of_the_data() -> None:
    for text, message in [
        ('[{"id": 1},\n {"id": 2, "text": "a', "the JSON data ends inside the value that starts on line 2"),
        ('{"junk": {"a": [1, 2', "the JSON data ends inside a value (line 1)"),
        ("[12", "the JSON array ends without ']'"),
    ]:
        with pytest.raises(JsonStructureError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read(text, 2)


def test_a_number_split_across_reads_is_read_whole() -> None:
    _, elements = read("[123456789012, 5]", 1)
    assert [e.value for e in elements] == [123456789012, 5]


def test_arrays_joined_with_a_bom_between_them_are_one_array() -> None:
    _, elements = read('[{"id": 1}]\n\ufeff[{"id": 2}]\ufeff\n', 2)
    assert [e.value for e in elements] == [{"id": 1}, {"id": 2}]


def test_a_deeply_nested_element_is_an_error_and_its_neighbour_is_read() -> None:
    deep = "[" * 50_000 + "]" * 50_000
    _, elements = read(
        f'[{{"id": "d", "text": {deep}}}, {{"id": "n", "text": "ok"}}]', 1 << 20, max_chars=1 << 20
    )
    assert elements[0].error.startswith("invalid JSON: nested deeper than the JSON decoder allows (line 1)")
    assert elements[1].value == {"id": "n", "text": "ok"}


def test_a_read_error_says_how_far_the_json_was_read() -> None:
    lines = iter(['[{"id": 1},\n', '{"id": 2},\n'])

    def broken(_n: int) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise TextFormatError("the gzip data is corrupt or truncated") from None

    with pytest.raises(TextFormatError, match=r"\(the JSON was read up to line 3\)$"):
        list(JsonRecords(broken, 1000))


def test_escapes_are_flagged_only_where_a_surrogate_escape_is() -> None:
    _, elements = read('[{"t": "\\uD83D"}, {"t": "\\u00e9"}, {"t": "\\ud83d\\ude00"}]', 1 << 20)
    assert [e.escapes for e in elements] == [True, False, True]
    _, slow = read('[{"t": "\\ud83d"}, {"t": "x"}]', 1)
    assert [e.escapes for e in slow] == [True, False]


# --- boundaries (issue #21, point 4: what `make mutation` found no test pinning) -------------
def every_cut(text: str) -> list[int]:
    """Every piece size from 1 to the whole text: each element is, in some run, decoded on the
    fast path (whole in the buffer) and in another on the slow path (cut by the end of a read)."""
    return list(range(1, len(text) + 1))


PLAIN_THEN_SURROGATE = '[{"t": "x"}, {"t": "\\uD83D"}]'


@pytest.mark.parametrize("size", every_cut(PLAIN_THEN_SURROGATE))
def test_each_element_is_flagged_by_its_own_text_only_however_it_is_cut(size: int) -> None:
    plain, surrogate = Element({"t": "x"}, None, "", False), Element({"t": "\ud83d"}, None, "", True)
    _, elements = read(PLAIN_THEN_SURROGATE, size)
    assert elements == [plain, surrogate]
    reversed_text = '[{"t": "\\uD83D"}, {"t": "x"}]'
    _, elements = read(reversed_text, size)
    assert elements == [surrogate, plain]


@pytest.mark.parametrize("size", every_cut('[123456, 1, "abcde"]'))
def test_a_value_of_exactly_max_chars_is_read_and_one_more_is_not(size: int) -> None:
    _, elements = read("[12345, 1, 2345]", size, max_chars=5)
    assert [e.value for e in elements] == [12345, 1, 2345] and not any(e.error for e in elements)
    _, elements = read('[123456, 1, "abcde"]', size, max_chars=5)
    too_large = Element(None, "record is larger than 5 characters", "", False)
    # size 7 cuts the oversized number at the end of a read: it is skipped whole, and the
    # elements after it are still read (they were swallowed before this test).
    assert elements == [too_large, Element(1), too_large]


@pytest.mark.parametrize("size", [1, 2, 5, 6, 7, 1 << 20])
def test_doubled_and_trailing_commas_between_elements_are_passed_over(size: int) -> None:
    doc = JsonRecords(pieces("[1,,2, ,,3,]", size), 1000)
    assert [e.value for e in itertools.islice(doc, 10)] == [1, 2, 3]
    assert doc.top_level == "array"


@pytest.mark.parametrize("size", [1, 3, 1 << 20])
def test_whitespace_before_the_document_is_passed_over_and_counted_in_lines(size: int) -> None:
    doc, elements = read("\n \n[1, 2]", size)
    assert [e.value for e in elements] == [1, 2] and doc.top_level == "array"
    doc, elements = read('\n\t{"tickets": [1]}', size)
    assert [e.value for e in elements] == [1] and doc.top_level == "object"
    with pytest.raises(JsonStructureError) as err:
        read("\n\n5", size)
    assert str(err.value) == (
        'expected a JSON array of tickets, or an object holding one (such as {"tickets": [...]}), '
        "found '5' at line 3"
    )
    doc, elements = read(" \n ", size)
    assert elements == [] and doc.top_level is None


def test_a_compact_object_is_read_and_data_after_it_is_refused() -> None:
    doc, elements = read('{"id":1,"n":2,"text":"x"}', 1 << 20)
    assert elements == [Element({"id": 1, "text": "x"})] and doc.top_level == "object"
    with pytest.raises(JsonStructureError) as err:
        read('{"text": "a"}]', 1 << 20)
    assert (
        str(err.value)
        == "unexpected data after the JSON document at line 1: the records after it are not read"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a":', "the JSON object ends without '}': the data is truncated"),
        ('{"tickets": [1]', "the JSON object ends without '}': the data is truncated"),
        (
            "[1, tru",
            "the JSON data ends inside the value that starts on line 1 (Expecting value): "
            "the data is truncated",
        ),
        (
            '[{"id": 1},\n {"id": 2, "text": "a',
            "the JSON data ends inside the value that starts on line 2 (Unterminated string starting at): "
            "the data is truncated",
        ),
        (
            "{}",
            'expected a JSON array of tickets, an object holding one (such as {"tickets": [...]}), or one '
            "ticket object; the object has no array of records under a known name ('_results', "
            "'conversations', 'data', 'entries', 'inputs', 'instances', 'issues', 'items', 'records', "
            "'requests', 'result', 'results', 'rows', 'tickets') and no ticket field (its members: none)",
        ),
    ],
)
def test_the_whole_message_of_a_document_error(text: str, message: str) -> None:
    for size in (1, 2, 1 << 20):
        with pytest.raises(JsonStructureError) as err:
            read(text, size)
        assert str(err.value) == message


def test_a_ticket_field_that_is_not_json_is_captured_as_nothing() -> None:
    doc, elements = read('{"id": 1, "text": tru}')
    assert doc.captured == {"id": 1, "text": None}
    assert elements == [Element(None, "member 'text': invalid JSON: Expecting value (line 1)")]


@pytest.mark.parametrize("size", [1, 4, 9, 1 << 20])
def test_invalid_words_and_strings_keep_their_own_extent(size: int) -> None:
    text = '[tru, Xyz,\n"bad \\q", "\\"\\q", nul]'
    _, elements = read(text, size)
    assert [(e.error, e.raw) for e in elements] == [
        ("invalid JSON: Expecting value (line 1)", "tru"),
        ("invalid JSON: Expecting value (line 1)", "Xyz"),
        ("invalid JSON: Invalid \\escape (line 2)", '"bad \\q"'),
        ("invalid JSON: Invalid \\escape (line 2)", '"\\"\\q"'),
        ("invalid JSON: Expecting value (line 2)", "nul"),
    ]


def test_the_text_kept_of_an_invalid_element_is_its_first_4096_characters() -> None:
    text = '[{"a": "' + "x" * 5000 + '", "b": tru}, 1]'
    _, elements = read(text, 1 << 20, max_chars=10_000)
    assert elements[0].raw == text[1:4097] and elements[1] == Element(1)


@pytest.mark.parametrize("size", [4099, 65_536, 1 << 20])
def test_line_numbers_stay_right_after_the_read_text_is_dropped(size: int) -> None:
    # ~520,000 characters: more than two of the reader's reads, so what was consumed is dropped
    # from its buffer while reading; the lines of later errors must still count from the start.
    body = "".join(f'"{i:08d}{"x" * 90}",\n' for i in range(5000))
    text = "[tru,\n" + body + "fals,\n" + body + "nul]"
    doc = JsonRecords(pieces(text, size), 1000)
    errors = [e.error for e in doc if e.error]
    assert errors == [
        "invalid JSON: Expecting value (line 1)",
        "invalid JSON: Expecting value (line 5002)",
        "invalid JSON: Expecting value (line 10003)",
    ]


def test_every_read_asks_for_a_bounded_number_of_characters() -> None:
    asked: list[object] = []
    text = "[" + ", ".join(['"' + "y" * 200 + '"'] * 3000) + "]"
    source = pieces(text, 50_000)

    def recording(n: int) -> str:
        asked.append(n)
        return source(n)

    assert len(list(JsonRecords(recording, 1000))) == 3000
    assert asked and all(isinstance(n, int) and 0 < n <= 1 << 20 for n in asked)

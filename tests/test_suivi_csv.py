"""CSV exports and French value forms (OPTIFLUX.md §8.4): pure functions, no hub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from bdi.routing.layout import default_layout
from bdi.suivi import csv
from bdi.suivi.values import Cell, Kind, cell, kinds_of, paris_stamp

PREMIUM = kinds_of(default_layout(), "premium_2")


def test_values_take_their_french_form() -> None:
    assert cell("-1831.35", Kind("signed_amount", 16)) == Cell("-1831,35", True, True)
    assert cell("+12.00", Kind("signed_amount", 16)).text == "12,00"
    assert cell("12.79000", PREMIUM["brokerage_rate"]).text == "12,79000"
    assert cell("2008-03-31", PREMIUM["act_date"]) == Cell("31/03/2008")
    assert cell(1, Kind("numeric", 3)) == Cell("001", True)
    assert cell(None, PREMIUM["act_date"]) == Cell("")
    assert cell("V", Kind("control", 1)).text == "Validé"
    assert cell("  AV-2008-001 ", PREMIUM["act_number"]).text == "AV-2008-001"


def test_times_are_shown_in_paris() -> None:
    assert paris_stamp(datetime(2008, 1, 15, 23, 30, tzinfo=UTC)) == "16/01/2008 00:30:00"
    assert paris_stamp(datetime(2008, 7, 1, 10, 0)) == "01/07/2008 12:00:00"  # naive = UTC


def test_formulas_are_neutralised_and_numbers_stay_numbers() -> None:
    cells = [
        Cell("=HYPERLINK(1)"),
        Cell("+33 1 00"),
        Cell("@SUM(A1)"),
        Cell("-cmd"),
        Cell("-1831,35", number=True),
        Cell("a;b"),
        Cell('dit "oui"'),
        Cell("ligne\nsuivante"),
    ]
    assert csv.line(cells) == (
        '\'=HYPERLINK(1);\'+33 1 00;\'@SUM(A1);\'-cmd;-1831,35;"a;b";"dit ""oui""";'
        '"ligne\nsuivante"\r\n'
    )


async def rows(values: Sequence[Sequence[Cell]]) -> AsyncIterator[Sequence[Cell]]:
    for value in values:
        yield value


async def test_export_has_bom_header_crlf_and_comes_in_chunks() -> None:
    many = [[Cell(f"ligne {n}"), Cell("1,00", number=True)] for n in range(20_000)]
    chunks = [c async for c in csv.encode(["Libellé", "Montant"], rows(many))]
    assert len(chunks) > 1 and all(len(c) < 2 * csv.CHUNK_BYTES for c in chunks)
    text = b"".join(chunks)
    assert text.startswith("\ufeffLibellé;Montant\r\n".encode())
    assert text.count(b"\r\n") == 20_001 and text.endswith(b"ligne 19999;1,00\r\n")
    empty = b"".join([c async for c in csv.encode(["A"], rows([]))])
    assert empty == b"\xef\xbb\xbfA\r\n"


def test_download_names_are_safe() -> None:
    assert csv.file_name("primes-rejetes") == "primes-rejetes.csv"
    assert csv.file_name('../x"y') == "___x_y.csv"

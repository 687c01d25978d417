"""The audit log: searched by words and days, paged, and exported as CSV with the Suivi's
conventions (`bdi.suivi.csv`: `;`, BOM, CRLF, formulas neutralised)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bdi.console.auth import Ctx
from bdi.console.core import Console
from bdi.console.formats import when
from bdi.suivi import csv
from bdi.suivi.values import Cell
from bdi.suivi.views import page_number, with_page

PAGE_SIZE = 50
COLUMNS = ("Date et heure", "Qui", "Adresse", "Acte", "Cible", "Détail")
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)


def _day(raw: str | None) -> date | None:
    """A day (AAAA-MM-JJ) or none given; anything else is a bad request."""
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise HTTPException(400, "date invalide") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise HTTPException(400, "date hors limites")
    return day


def _criteria(request: Request) -> tuple[str, date | None, date | None]:
    params = request.query_params
    return params.get("q", "")[:200], _day(params.get("du")), _day(params.get("au"))


async def journal(c: Console, request: Request, ctx: Ctx) -> Response:
    words, start, end = _criteria(request)
    number = page_number(request.query_params)
    found = await c.service(request, ctx).audit_log(words, start, end, number, PAGE_SIZE)
    return c.render(request, "audit.html", ctx, found=found, q=words, du=start, au=end,
                    params=request.query_params, with_page=with_page)  # fmt: skip


async def journal_csv(c: Console, request: Request, ctx: Ctx) -> Response:
    words, start, end = _criteria(request)
    events = c.service(request, ctx).audit_events(words, start, end)

    async def rows() -> AsyncIterator[Sequence[Cell]]:
        async for e in events:
            yield [Cell(when(e["at"])), Cell(e["actor"]), Cell(e["address"] or ""),
                   Cell(e["action"]), Cell(e["target"]), Cell(e["detail"])]  # fmt: skip

    headers = {"Content-Disposition": f'attachment; filename="{csv.file_name("journal-audit")}"'}
    return StreamingResponse(csv.encode(COLUMNS, rows()), media_type="text/csv; charset=utf-8",
                             headers=headers)  # fmt: skip

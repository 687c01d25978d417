"""The Suivi web application (OPTIFLUX.md §8): thin Starlette handlers over `bdi.suivi.queries`
and `bdi.suivi.pending`, rendered with Jinja2 in French.

Every handler that names a flow or a file goes through a query that applies the access rule
and answers None for anything the user may not see: the handler then answers 404, the same
as for an id that does not exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bdi.admin.api import client_address
from bdi.hub import Hub
from bdi.routing.layout import Column
from bdi.store import sessions
from bdi.store.models import WebSession
from bdi.suivi import contents, csv, pending, queries, views
from bdi.suivi.auth import (
    COOKIE,
    CSRF_FIELD,
    Lockout,
    LockoutPolicy,
    Session,
    Signer,
    check_password,
    cookie_session,
    csrf_ok,
    is_session_token,
    session_id,
    set_session_cookie,
)
from bdi.suivi.headers import SecurityHeaders
from bdi.suivi.pending import PendingList
from bdi.suivi.queries import FileCriteria, Search
from bdi.suivi.values import Cell, kinds_of, paris_date, paris_stamp, paris_time, row_cells

log = structlog.get_logger("bdi.suivi")
HERE = Path(__file__).parent
Handler = Callable[[Request, "Ctx"], Awaitable[Response]]
# told of each failed login: (source address, whether the id named no participant)
FailureHook = Callable[[str, bool], object]
MAX_ID = views.MAX_ID  # a larger id names nothing
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)  # dates a search may name
FILE_COLUMNS = (
    "Nom du fichier",
    "Expéditeur",
    "Destinataire",
    "Date de mouvement du fichier par la BDI",
    "Heure du mouvement du fichier par la BDI",
    "Type du fichier",
)
TRACKING_COLUMNS = (
    "Date et Heure de passage par la BDI",
    "Expéditeur",
    "Destinataire",
    "Nom du fichier contenant le flux",
    "Contrôle (Suspens, Validé, Rejeté)",
    "Commentaire",
)


@dataclass(frozen=True, slots=True)
class FilePaging:
    """How much of one file a page shows: a 5 000-flow file (16 MB) must open in well under
    a second, so its flows and its content come a page at a time (the CSV stays whole)."""

    flows: int = 100
    records: int = 500


@dataclass(frozen=True, slots=True)
class Ctx:
    """The logged-in user of a request and its session."""

    user: str
    name: str
    session: Session


def not_found() -> HTTPException:
    return HTTPException(404)


def path_id(request: Request, name: str) -> int:
    """An id of the path (digits by its route); one past the store's range names nothing."""
    value = int(request.path_params[name])
    if value > MAX_ID:
        raise not_found()
    return value


def _no_failure_hook(address: str, unknown: bool) -> None:
    """Without a defender (the Suivi served alone), failures only count per id."""


class SuiviApp:
    """The handlers, bound to one hub; `create_app` routes them."""

    def __init__(
        self,
        hub: Hub,
        signer: Signer,
        lockout: Lockout,
        secure: bool,
        clock: Callable[[], float],
        on_failure: FailureHook = _no_failure_hook,
        paging: FilePaging = FilePaging(),
    ) -> None:
        self.hub, self.signer, self.lockout = hub, signer, lockout
        self.paging = paging
        self.secure, self.clock, self.on_failure = secure, clock, on_failure
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["cell_class"] = lambda c: "num" if c.amount else ""

    # --- sessions ----------------------------------------------------------------------

    def session_of(self, request: Request) -> Session:
        """The anonymous session of the cookie (its CSRF token), or a new one."""
        return cookie_session(self.signer, request.cookies.get(COOKIE), self.clock())

    def set_cookie(self, request: Request, response: Response, session: Session) -> Response:
        value = session.token or self.signer.dumps(session)
        return set_session_cookie(response, COOKIE, value, request, self.signer.max_age,
                                  self.secure, "lax")  # fmt: skip

    async def ctx_of(self, request: Request) -> Ctx | None:
        """The logged-in session of the cookie, if the store still has it and its
        participant is active with the credentials it logged in with."""
        token = request.cookies.get(COOKIE)
        if not token or not is_session_token(token):
            return None
        now = datetime.fromtimestamp(self.clock(), UTC)
        found = await sessions.session_of(self.hub.store, session_id(token), now)
        if found is None:
            return None
        row, participant = found
        if not participant.active or participant.credentials_version != row.credentials_version:
            return None
        session = Session(participant.id, row.credentials_version, row.csrf, 0.0, token)
        return Ctx(participant.id, participant.name, session)

    def login_required(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            ctx = await self.ctx_of(request)
            if ctx is None:
                return RedirectResponse(request.url_for("login").path, status_code=303)
            if request.method == "POST":
                form = await request.form()
                if not csrf_ok(ctx.session, form.get(CSRF_FIELD)):
                    log.info("suivi.csrf_refused", participant=ctx.user, path=request.url.path)
                    raise HTTPException(403)
            response = await handler(request, ctx)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return wrapped

    def render(
        self, request: Request, name: str, ctx: Ctx | None, code: int = 200, **values: Any
    ) -> Response:
        context = {"ctx": ctx, "csrf": ctx.session.csrf if ctx else "", **values}
        return self.templates.TemplateResponse(request, name, context, status_code=code)

    # --- login ---------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        session = self.session_of(request)
        response = self.render(request, "login.html", None, csrf_login=session.csrf, locked=False)
        return self.set_cookie(request, response, session)

    async def login(self, request: Request) -> Response:
        session = self.session_of(request)
        form = await request.form()
        if not csrf_ok(session, form.get(CSRF_FIELD)):
            raise HTTPException(403)
        user = str(form.get("identifiant", "")).strip().upper()[:32]
        password = str(form.get("mot_de_passe", ""))
        address = client_address(request)
        if self.lockout.locked(user, address):
            log.info("suivi.login_locked", participant=user, address=address)
            self.on_failure(address, False)
            return self._login_again(request, session, locked=True)
        await asyncio.sleep(self.lockout.delay(user))  # slow down repeated failures on the id
        checked = await check_password(self.hub.store, user, password)
        if checked.version is None:
            self.lockout.failed(user, address)
            log.info("suivi.login_failed", participant=user, address=address)
            self.on_failure(address, not checked.known)
            return self._login_again(request, session, self.lockout.locked(user, address))
        self.lockout.succeeded(user, address)
        await self.hub.store.update_participant(user, last_login=datetime.now(UTC))
        log.info("suivi.login", participant=user, address=address)
        fresh = await self._open_session(user, checked.version)
        response = RedirectResponse(request.url_for("menu").path, status_code=303)
        return self.set_cookie(request, response, fresh)

    async def _open_session(self, user: str, version: int) -> Session:
        fresh = Session.logged_in(user, version, self.clock())
        assert fresh.token is not None
        row = WebSession(
            id=session_id(fresh.token),
            participant_id=user,
            credentials_version=version,
            csrf=fresh.csrf,
            created_at=datetime.fromtimestamp(fresh.issued, UTC),
            expires_at=datetime.fromtimestamp(fresh.issued + self.signer.max_age, UTC),
        )
        await sessions.open_session(self.hub.store, row)
        return fresh

    def _login_again(self, request: Request, session: Session, locked: bool) -> Response:
        """§8.1: a wrong identifier or password simply clears both fields."""
        status = 429 if locked else 401
        response = self.render(
            request, "login.html", None, status, csrf_login=session.csrf, locked=locked
        )
        return self.set_cookie(request, response, session)

    async def logout(self, request: Request, ctx: Ctx) -> Response:
        """The session ends in the store: its cookie, even kept aside, opens nothing now."""
        assert ctx.session.token is not None
        await sessions.close_session(self.hub.store, session_id(ctx.session.token))
        log.info("suivi.logout", participant=ctx.user)
        response = RedirectResponse(request.url_for("login").path, status_code=303)
        return self.set_cookie(request, response, Session.anonymous(self.clock()))

    # --- menu ----------------------------------------------------------------------------

    async def menu(self, request: Request, ctx: Ctx) -> Response:
        layout = self.hub.layout
        flows = [
            (
                queries.FLOW_TYPES[name],
                slug,
                [
                    s
                    for s in layout.searches
                    if not s.only_when and queries.spec_layout(layout, s) == name
                ],
            )
            for name, slug in views.LAYOUT_SLUGS.items()
        ]
        brokerage = [s for s in layout.searches if s.only_when]
        return self.render(request, "menu.html", ctx, flows=flows, brokerage=brokerage)

    # --- flow searches ---------------------------------------------------------------------

    def _search(self, request: Request) -> Search:
        try:
            spec = self.hub.layout.search(request.path_params["search_id"])
        except KeyError:
            raise not_found() from None
        return Search.of(
            self.hub.layout, spec.id, views.criteria_of(request.query_params, spec.criteria)
        )

    async def search(self, request: Request, ctx: Ctx) -> Response:
        search = self._search(request)
        pick = views.pickers(self.hub.layout, await self.hub.store.referential())
        fields = views.form_fields(search.spec.criteria, search.criteria, pick)
        page = None
        if "envoyer" in request.query_params:
            number = views.page_number(request.query_params)
            page = await queries.search_page(self.hub.store, search, ctx.user, number)
        rows = [
            views.hit_row(h, search.columns, search.kinds, self._track(request, h.flow_id))
            for h in (page.items if page else [])
        ]
        return self.render(
            request,
            "search.html",
            ctx,
            search=search.spec,
            fields=fields,
            page=page,
            rows=rows,
            params=request.query_params,
            with_page=views.with_page,
        )

    async def search_csv(self, request: Request, ctx: Ctx) -> Response:
        search = self._search(request)
        hits = queries.search_rows(self.hub.store, search, ctx.user)
        labels = [c.fr for c in search.columns]
        return self._csv(labels, views.csv_rows(hits, search.columns, search.kinds), search.spec.id)

    def _csv(
        self, labels: Sequence[str], rows: AsyncIterator[Sequence[Cell]], stem: str
    ) -> Response:
        headers = {
            "Content-Disposition": f'attachment; filename="{csv.file_name(stem)}"',
            "Cache-Control": "no-store",
        }
        return StreamingResponse(
            csv.encode(labels, rows), media_type="text/csv; charset=utf-8", headers=headers
        )

    def _track(self, request: Request, flow_id: int) -> str:
        return request.url_for("tracking", flow_id=flow_id).path

    # --- tracking (§8.5) --------------------------------------------------------------------

    async def tracking(self, request: Request, ctx: Ctx) -> Response:
        flow_id = path_id(request, "flow_id")
        store, layout = self.hub.store, self.hub.layout
        passages = await queries.tracking(store, ctx.user, flow_id)
        # the summary shows the values a search row shows: the latest of the user's own
        # occurrences, or for the §8.9 exception the row of the incomplete list
        shown = queries.own_latest(passages) if passages else None
        if passages is None:
            shown = await pending.incomplete_hit(store, layout, ctx.user, flow_id)
            if shown is not None:
                passages = await queries.tracking(store, ctx.user, flow_id, granted=True)
        if passages is None or shown is None:
            raise not_found()
        columns, kinds = queries.columns_for(layout, shown.layout)
        cells = views.row_cells_of(shown, columns, kinds)
        return self.render(
            request,
            "tracking.html",
            ctx,
            passages=passages,
            columns=TRACKING_COLUMNS,
            summary=list(zip([c.fr for c in columns], cells, strict=True)),
            flow_fr=queries.FLOW_TYPES[shown.layout],
            stamp=paris_stamp,
        )

    # --- pending lists (§8.8) ---------------------------------------------------------------

    def _layout_of(self, request: Request) -> str:
        name = views.SLUG_LAYOUTS.get(request.path_params["flux"])
        if name is None:
            raise not_found()
        return name

    async def pending(self, request: Request, ctx: Ctx) -> Response:
        layout_name = self._layout_of(request)
        columns, kinds = queries.columns_for(self.hub.layout, layout_name)
        tables = []
        for plist in pending.lists_for(ctx.user):
            number = views.page_number(request.query_params, f"page_{plist.name}")
            page = await pending.pending_page(
                self.hub.store, self.hub.layout, ctx.user, layout_name, plist, number
            )
            rows = [
                self._pending_row(request, h, columns, kinds, plist, layout_name)
                for h in page.items
            ]
            tables.append((plist, page, rows))
        labels = [c.fr for c in columns] + list(views.PASSAGE_LABELS)
        return self.render(
            request,
            "pending.html",
            ctx,
            tables=tables,
            labels=labels,
            flow_fr=queries.FLOW_TYPES[layout_name],
            slug=request.path_params["flux"],
            params=request.query_params,
            with_page=views.with_page,
        )

    def _pending_row(
        self,
        request: Request,
        hit: queries.Hit,
        columns: Any,
        kinds: Any,
        plist: PendingList,
        layout_name: str,
    ) -> views.TableRow:
        row = views.hit_row(hit, columns, kinds, self._track(request, hit.flow_id))
        row.cells += views.passage_cells(hit)
        if plist.dismissable:
            slug = views.LAYOUT_SLUGS[layout_name]
            row.dismiss = request.url_for(
                "dismiss", flux=slug, liste=plist.name, flow_id=hit.flow_id
            ).path
        return row

    def _list_of(self, request: Request, ctx: Ctx) -> PendingList:
        plist = pending.list_named(ctx.user, request.path_params["liste"])
        if plist is None:
            raise not_found()
        return plist

    async def pending_csv(self, request: Request, ctx: Ctx) -> Response:
        layout_name, plist = self._layout_of(request), self._list_of(request, ctx)
        columns, kinds = queries.columns_for(self.hub.layout, layout_name)
        hits = pending.pending_rows(self.hub.store, self.hub.layout, ctx.user, layout_name, plist)
        labels = [c.fr for c in columns] + list(views.PASSAGE_LABELS)
        return self._csv(
            labels,
            views.csv_rows(hits, columns, kinds, passage=True),
            f"{request.path_params['flux']}-{plist.name}",
        )

    async def dismiss(self, request: Request, ctx: Ctx) -> Response:
        layout_name, plist = self._layout_of(request), self._list_of(request, ctx)
        flow_id = path_id(request, "flow_id")
        done = await pending.dismiss(
            self.hub.store,
            self.hub.layout,
            ctx.user,
            layout_name,
            plist.name,
            flow_id,
            datetime.now(UTC),
        )
        if not done:
            raise not_found()
        log.info("suivi.dismissed", participant=ctx.user, list=plist.name, flow=flow_id)
        target = request.url_for("pending", flux=request.path_params["flux"]).path
        return RedirectResponse(target, status_code=303)

    # --- incomplete répartitions (§8.9) -----------------------------------------------------

    async def incomplete(self, request: Request, ctx: Ctx) -> Response:
        columns, kinds = queries.columns_for(self.hub.layout, "allocation")
        number = views.page_number(request.query_params)
        page = await pending.incomplete_page(self.hub.store, self.hub.layout, ctx.user, number)
        rows = [
            views.hit_row(h, columns, kinds, self._track(request, h.flow_id)) for h in page.items
        ]
        return self.render(
            request,
            "incomplete.html",
            ctx,
            page=page,
            rows=rows,
            labels=[c.fr for c in columns],
            params=request.query_params,
            with_page=views.with_page,
        )

    async def incomplete_csv(self, request: Request, ctx: Ctx) -> Response:
        columns, kinds = queries.columns_for(self.hub.layout, "allocation")
        hits = pending.incomplete_rows(self.hub.store, self.hub.layout, ctx.user)
        return self._csv(
            [c.fr for c in columns],
            views.csv_rows(hits, columns, kinds),
            "repartitions-incompletes",
        )

    # --- files (§8.6) ---------------------------------------------------------------------

    def _file_criteria(self, request: Request) -> FileCriteria:
        params = request.query_params
        today = queries.paris_today(datetime.now(UTC))
        criteria = FileCriteria(
            name=views.text_param(params, "nom"),
            file_type=views.text_param(params, "type"),
            start=_day(params.get("du")),
            end=_day(params.get("au")),
            sender=views.resolve_code(params, "expediteur"),
            recipient=views.resolve_code(params, "destinataire"),
        )
        return criteria.with_default_period(today)

    async def files(self, request: Request, ctx: Ctx) -> Response:
        criteria = self._file_criteria(request)
        pick = views.pickers(self.hub.layout, await self.hub.store.referential())
        page = None
        if "envoyer" in request.query_params:
            number = views.page_number(request.query_params)
            page = await queries.file_page(
                self.hub.store, ctx.user, criteria, number, self.hub.layout.page_size
            )
        types = sorted((t.letter, t.fr) for t in self.hub.layout.file_types.values())
        return self.render(
            request,
            "files.html",
            ctx,
            criteria=criteria,
            page=page,
            types=types,
            mailboxes=pick.mailboxes,
            params=request.query_params,
            with_page=views.with_page,
            day=paris_date,
            clock=paris_time,
        )

    async def files_csv(self, request: Request, ctx: Ctx) -> Response:
        movements = queries.file_rows(self.hub.store, ctx.user, self._file_criteria(request))

        async def rows() -> AsyncIterator[list[Cell]]:
            async for m in movements:
                yield [
                    Cell(m.file_name),
                    Cell(m.sender_id),
                    Cell(m.recipient_id),
                    Cell(paris_date(m.created_at)),
                    Cell(paris_time(m.created_at)),
                    Cell(m.file_type),
                ]

        return self._csv(FILE_COLUMNS, rows(), "fichiers")

    async def file_detail(self, request: Request, ctx: Ctx) -> Response:
        movement_id = path_id(request, "movement_id")
        number = await self._detail_page(request, movement_id)
        size = self.paging.flows
        store, layout = self.hub.store, self.hub.layout
        found = await queries.file_flow_page(store, layout, ctx.user, movement_id, number, size)
        if found is None:
            raise not_found()
        if number > found.page.pages:
            raise HTTPException(400, "numéro de page hors du fichier")
        flows = found.page.items
        if any(contents.has_grid(f) for f in flows):
            src = await contents.source_of(store, self.hub.contents(), found.movement)
            flows = await contents.with_grids(src, flows, layout)
        return self.render(
            request,
            "file.html",
            ctx,
            movement=found.movement,
            page=found.page,
            groups=self._file_groups(request, flows, dict(found.counts)),
            params=request.query_params,
            with_page=views.with_page,
            day=paris_date,
            clock=paris_time,
        )

    async def _detail_page(self, request: Request, movement_id: int) -> int:
        """The page asked for, else the page holding the flow a tracking link names."""
        flow_id = views.flow_param(request.query_params)
        if "page" in request.query_params or flow_id is None:
            return views.page_number(request.query_params)
        position = await queries.flow_position(self.hub.store, movement_id, flow_id)
        return 1 if position is None else views.page_of_position(position, self.paging.flows)

    def _file_groups(
        self, request: Request, flows: list[queries.FileFlow], totals: dict[str, int]
    ) -> list[tuple[str, int, list[str], list[views.TableRow]]]:
        """The page's flows by layout, each with its count in the whole file."""
        layout = self.hub.layout
        grid_spec = layout.raw["suivi"]["allocation_grid"]
        grid_kinds = kinds_of(layout, grid_spec["record"])
        grid_columns = tuple(Column(c["fr"], c["field"]) for c in grid_spec["columns"])
        groups: dict[str, list[views.TableRow]] = {}
        for item in flows:
            columns, kinds = queries.columns_for(layout, item.hit.layout)
            row = views.hit_row(item.hit, columns, kinds, self._track(request, item.hit.flow_id))
            row.grid = [row_cells(g, grid_columns, grid_kinds) for g in item.grid]
            row.anchor = f"flux-{item.hit.flow_id}"
            groups.setdefault(item.hit.layout, []).append(row)
        out = []
        for name, rows in groups.items():
            columns, _ = queries.columns_for(layout, name)
            fr = queries.FLOW_TYPES[name]
            out.append((fr, totals.get(name, len(rows)), [c.fr for c in columns], rows))
        return out

    async def file_csv(self, request: Request, ctx: Ctx) -> Response:
        """Every flow of the file, whatever the page shown."""
        movement_id = path_id(request, "movement_id")
        store = self.hub.store
        movement = await queries.movement(store, ctx.user, movement_id)
        if movement is None:
            raise not_found()
        layout = self.hub.layout
        counts = await queries.flow_counts(store, layout, movement)
        columns = views.file_columns(
            {name: queries.columns_for(layout, name) for name, _ in counts}
        )

        async def rows() -> AsyncIterator[list[Cell]]:
            async for item in queries.file_flow_rows(store, ctx.user, movement_id):
                yield columns.cells(item.hit)

        stem = movement.file_name.rsplit(".", 1)[0]
        return self._csv(columns.labels, rows(), stem)

    async def file_content(self, request: Request, ctx: Ctx) -> Response:
        movement_id = path_id(request, "movement_id")
        store = self.hub.store
        src = await contents.source(store, self.hub.contents(), ctx.user, movement_id)
        movement = await queries.movement(store, ctx.user, movement_id)
        if src is None or movement is None:
            raise not_found()
        log.info("suivi.content_opened", participant=ctx.user, movement=movement_id)
        if "brut" in request.query_params:
            return self._download(src, movement.file_name)
        number = views.page_number(request.query_params)
        paging = contents.Paging(self.paging.records, self.hub.layout.record_length)
        try:
            shown = await contents.page(src, number, paging)
        except contents.ContentGone:
            raise not_found() from None
        if shown is None:
            raise HTTPException(400, "numéro de page hors du fichier")
        text = shown.data.decode(self.hub.layout.encoding, errors="replace")
        return self.render(
            request,
            "content.html",
            ctx,
            movement=movement,
            text=text,
            page=shown,
            params=request.query_params,
            with_page=views.with_page,
        )

    def _download(self, src: contents.Source, name: str) -> Response:
        """The whole decrypted content, streamed: a big file is never held in memory."""
        headers = {
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Length": str(src.size),
            "Cache-Control": "no-store",
        }
        return StreamingResponse(
            contents.chunks(src), media_type="application/octet-stream", headers=headers
        )

    # --- search by clé (§8.7) ----------------------------------------------------------------

    async def by_key(self, request: Request, ctx: Ctx) -> Response:
        clé = views.text_param(request.query_params, "cle")
        tables = []
        if clé:
            pages = {
                s: views.page_number(request.query_params, f"page_{s}")
                for s in queries.SEARCH_OF_LAYOUT.values()
            }
            for table in await queries.by_key(
                self.hub.store, self.hub.layout, ctx.user, clé, pages
            ):
                rows = [
                    views.hit_row(h, table.columns, table.kinds, self._track(request, h.flow_id))
                    for h in table.page.items
                ]
                tables.append((table, rows))
        return self.render(
            request,
            "by_key.html",
            ctx,
            cle=clé,
            tables=tables,
            params=request.query_params,
            with_page=views.with_page,
        )

    async def brokerage(self, request: Request, ctx: Ctx) -> Response:
        searches = [s for s in self.hub.layout.searches if s.only_when]
        return self.render(request, "brokerage.html", ctx, searches=searches)

    # --- errors ---------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        ctx = await self.ctx_of(request)
        titles = {
            400: "Requête invalide",
            403: "Requête refusée",
            404: "Page introuvable",
            405: "Méthode non permise",
        }
        detail = exc.detail if isinstance(exc, HTTPException) and status == 400 else ""
        return self.render(
            request,
            "error.html",
            ctx,
            status,
            title=titles.get(status, "Erreur"),
            status=status,
            detail=detail,
        )


def _day(text: str | None) -> date | None:
    """A date of the form (AAAA-MM-JJ), or none given; anything else is a bad request."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, "date invalide") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise HTTPException(400, "date hors limites")
    return day


def create_app(
    hub: Hub,
    *,
    secret_key: str,
    secure_cookies: bool = False,
    lockout: LockoutPolicy | Lockout | None = None,
    session_seconds: float = 8 * 3600,
    clock: Callable[[], float] = time.time,
    on_failure: FailureHook = _no_failure_hook,
    paging: FilePaging | None = None,
) -> Starlette:
    """The Suivi as an ASGI app over the hub's store; `secure_cookies` when served over TLS.

    `lockout` configures the slow-down and lock of repeated login failures (a `Lockout`
    brings its own clock, and may be shared with `/api/uploads`); `clock` dates the
    sessions; `on_failure` hears of each failed login (the hub's defender); `paging` how
    much of one file a page shows."""
    if len(secret_key) < 16:
        raise ValueError("the Suivi's secret key must be at least 16 characters")
    signer = Signer(secret_key.encode("utf-8"), session_seconds)
    throttle = lockout if isinstance(lockout, Lockout) else Lockout(lockout or LockoutPolicy())
    suivi = SuiviApp(
        hub, signer, throttle, secure_cookies, clock, on_failure, paging or FilePaging()
    )
    return Starlette(
        routes=routes(suivi),
        exception_handlers={HTTPException: suivi.http_error},
        middleware=[Middleware(SecurityHeaders)],
    )


def routes(s: SuiviApp) -> list[Route | Mount]:
    need = s.login_required
    return [
        Route("/", need(s.menu), name="menu"),
        Route("/connexion", s.login_form, name="login", methods=["GET"]),
        Route("/connexion", s.login, name="login_post", methods=["POST"]),
        Route("/deconnexion", need(s.logout), name="logout", methods=["POST"]),
        Route("/recherche/{search_id}", need(s.search), name="search"),
        Route("/recherche/{search_id}/csv", need(s.search_csv), name="search_csv"),
        Route("/suivi/{flow_id:int}", need(s.tracking), name="tracking"),
        Route("/attente/{flux}", need(s.pending), name="pending"),
        Route("/attente/{flux}/{liste}/csv", need(s.pending_csv), name="pending_csv"),
        Route(
            "/attente/{flux}/{liste}/{flow_id:int}/supprimer",
            need(s.dismiss),
            name="dismiss",
            methods=["POST"],
        ),
        Route("/repartitions-incompletes", need(s.incomplete), name="incomplete"),
        Route("/repartitions-incompletes/csv", need(s.incomplete_csv), name="incomplete_csv"),
        Route("/fichiers", need(s.files), name="files"),
        Route("/fichiers/csv", need(s.files_csv), name="files_csv"),
        Route("/fichiers/{movement_id:int}", need(s.file_detail), name="file"),
        Route("/fichiers/{movement_id:int}/csv", need(s.file_csv), name="file_csv"),
        Route("/fichiers/{movement_id:int}/contenu", need(s.file_content), name="content"),
        Route("/cle", need(s.by_key), name="by_key"),
        Route("/differences-courtages", need(s.brokerage), name="brokerage"),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

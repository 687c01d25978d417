"""`bdi admin …`: the admin commands of HUB.md, each with `--json` for scripts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # imported lazily: `bdi check` must not pay for the store and SSH stacks
    from bdi.admin.service import AdminService

app = typer.Typer(help="Register participants and their keys; rotate the admin token.")
participant_app = typer.Typer(help="Participants: add, list, show, disable, enable, keys.")
token_app = typer.Typer(help="The admin API token.")
referential_app = typer.Typer(help="The participant referential (codes, names, mailboxes).")
jobs_app = typer.Typer(help="Jobs the hub failed: list, show, retry (HUB.md, quarantine).")
bans_app = typer.Typer(help="Source addresses banned after failed logins: list, lift.")
app.add_typer(participant_app, name="participant")
app.add_typer(token_app, name="token")
app.add_typer(referential_app, name="referential")
app.add_typer(jobs_app, name="jobs")
app.add_typer(bans_app, name="bans")
alerts_app = typer.Typer(help="Alerts by e-mail to the operators (smtp_* settings).")
app.add_typer(alerts_app, name="alerts")

DataOpt = Annotated[Path | None, typer.Option("--data", envvar="BDI_DATA", help="data folder")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@app.callback()
def admin_root() -> None:
    """Every admin command: its events to stderr, its result alone on stdout (--json)."""
    _events_to_stderr()


def _fail(reason: str) -> typer.Exit:
    typer.echo(f"bdi: {reason}", err=True)
    return typer.Exit(1)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"{path}: {exc}") from exc


def _run(data: Path | None, op: Callable[[AdminService], Awaitable[Any]]) -> Any:
    from bdi.admin.service import AdminError
    from bdi.admin.wiring import admin_service
    from bdi.config import load_settings

    async def go() -> Any:
        async with admin_service(load_settings(None, data=data)) as service:
            return await op(service)

    try:
        return asyncio.run(go())
    except (AdminError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc


def _out(result: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else text(result))


def _row(p: dict[str, Any]) -> str:
    return f"{p['id']}  {p['state']:8}  {p['role']:9}  {p['pgp_fingerprint']}  {p['name']}"


def _details(p: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in p.items())


@participant_app.command("add")
def add(
    edi_id: Annotated[str, typer.Argument(help="EDI identifier, e.g. COU010234")],
    name: Annotated[str, typer.Option(help="display name")],
    email: Annotated[str, typer.Option(help="contact e-mail")],
    pgp_key: Annotated[Path, typer.Option(help="OpenPGP public key file")],
    role: Annotated[str | None, typer.Option(help="courtier|agent|aaso|compagnie|cesam")] = None,
    ssh_key: Annotated[Path | None, typer.Option(help="SSH public key file")] = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a participant; prints its issued password once."""
    key, ssh = _read(pgp_key), _read(ssh_key) if ssh_key else None
    result = _run(
        data, lambda s: s.add(edi_id, name=name, email=email, pgp_key=key, role=role, ssh_key=ssh)
    )
    _out(result, as_json, lambda r: f"registered {r['id']}\npassword (shown once): {r['password']}")


@participant_app.command("list")
def list_(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Every participant with its state, role and key."""
    result = _run(data, lambda s: s.list())
    _out(result, as_json, lambda rows: "\n".join(_row(p) for p in rows) or "no participant")


@participant_app.command("show")
def show(edi_id: str, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Fingerprints, creation, last login and state of one participant."""
    _out(_run(data, lambda s: s.show(edi_id)), as_json, _details)


@participant_app.command("disable")
def disable(edi_id: str, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Refuse its logins and close its open sessions."""
    _out(_run(data, lambda s: s.set_active(edi_id, False)), as_json, _row)


@participant_app.command("enable")
def enable(edi_id: str, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Let it log in again."""
    _out(_run(data, lambda s: s.set_active(edi_id, True)), as_json, _row)


@participant_app.command("reset-password")
def reset_password(edi_id: str, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Issue a new password (printed once); open sessions are closed."""
    result = _run(data, lambda s: s.reset_password(edi_id))
    _out(result, as_json, lambda r: f"password of {r['id']} (shown once): {r['password']}")


@participant_app.command("set-key")
def set_key(
    edi_id: str,
    pgp_key: Annotated[Path | None, typer.Option(help="new OpenPGP public key file")] = None,
    ssh_key: Annotated[Path | None, typer.Option(help="new SSH public key file")] = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace its OpenPGP key (uploads signed with the old one are refused) or SSH key."""
    if (pgp_key is None) == (ssh_key is None):
        raise _fail("give exactly one of --pgp-key and --ssh-key")
    if pgp_key is not None:
        key = _read(pgp_key)
        result = _run(data, lambda s: s.set_pgp_key(edi_id, key))
    else:
        assert ssh_key is not None
        ssh = _read(ssh_key)
        result = _run(data, lambda s: s.set_ssh_key(edi_id, ssh))
    _out(result, as_json, _key_changed)


def _key_changed(r: dict[str, Any]) -> str:
    if r.get("pgp_state") == "revoked":
        return f"key {r['pgp_fingerprint']} of {r['id']} revoked"
    return f"key of {r['id']} replaced"


@participant_app.command("revoke")
def revoke(
    edi_id: str,
    file: Annotated[Path, typer.Option(help="its revocation certificate, or its revoked key")],
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke its registered OpenPGP key: files signed by it are refused from now on."""
    certificate = _read(file)
    _out(_run(data, lambda s: s.revoke_pgp_key(edi_id, certificate)), as_json, _key_changed)


@app.command("hub-key")
def hub_key(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """The hub's OpenPGP public key, armoured."""
    result = _run(data, lambda s: s.hub_key())
    _out(result, as_json, lambda r: r["armoured"].rstrip())


@token_app.command("rotate")
def rotate(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """A new admin API token, printed once; the old one stops working."""
    result = _run(data, lambda s: s.rotate_token())
    _out(result, as_json, lambda r: f"admin API token (shown once): {r['token']}")


@referential_app.command("load")
def load(file: Path, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Replace the participant referential (format of samples/referentiel.toml)."""
    text = _read(file)
    result = _run(data, lambda s: s.load_referential(text))
    _out(result, as_json, lambda r: f"referential loaded: {r['participants']} codes")


def _job_row(j: dict[str, Any]) -> str:
    return f"{j['id']:>8}  {j['state']:11}  {j['participant']:10}  {j['file']}  {j['error'] or ''}"


def _job_details(j: dict[str, Any]) -> str:
    return "\n".join(f"{key:16} {'' if value is None else value}" for key, value in j.items())


@jobs_app.command("list")
def jobs_list(
    which: Annotated[str, typer.Option(help="quarantined, waiting or all")] = "quarantined",
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Jobs, newest first: quarantined ones by default; `waiting`: queued or waiting out a fault."""
    result = _run(data, lambda s: s.jobs(which))
    _out(result, as_json, lambda rows: "\n".join(_job_row(j) for j in rows) or f"no {which} job")


@jobs_app.command("show")
def jobs_show(job_id: int, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """One job: its upload, state, attempts and last error."""
    _out(_run(data, lambda s: s.job(job_id)), as_json, _job_details)


@jobs_app.command("retry")
def jobs_retry(job_id: int, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Run a quarantined job again once its cause is fixed; the sender then gets its outcome."""
    result = _run(data, lambda s: s.retry_job(job_id))
    _out(result, as_json, lambda j: f"job {j['id']} will run again within seconds")


def _ban_row(b: dict[str, Any]) -> str:
    return f"{b['address']:39}  until {b['until']}  score {b['score']:>3}  {b['reason']}"


@bans_app.command("list")
def bans_list(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """The addresses banned now, with the end of their ban and what got them banned."""
    result = _run(data, lambda s: s.bans())
    _out(result, as_json, lambda rows: "\n".join(_ban_row(b) for b in rows) or "no ban")


@bans_app.command("lift")
def bans_lift(address: str, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Let an address in again (the running hub sees it within a couple of seconds)."""
    result = _run(data, lambda s: s.lift_ban(address))
    _out(result, as_json, lambda r: f"ban of {r['address']} lifted")


def _events_to_stderr() -> None:
    """The events these commands log (`inbox.archived`…) go to stderr: stdout is the result."""
    import sys

    import structlog

    # the stream is looked up at each event, never kept: a caller may swap sys.stderr and
    # close it afterwards (click's CliRunner does), and this configuration is process-wide
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))


@app.command("redeliver")
def redeliver(
    movement_id: Annotated[int, typer.Argument(help="the movement (its id in the Suivi)")],
    wait: Annotated[float, typer.Option(help="seconds to wait for the running hub")] = 30.0,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a delivery again to its recipient (its current key), as a new movement."""
    from bdi.admin.operations import redeliver as send_again

    _events_to_stderr()
    result = _run(data, lambda s: send_again(s, movement_id, wait))
    _out(result, as_json, lambda r: f"movement {r['movement']} sent again to {r['recipient']} "
                                    f"as {r['file']} (movement {r['new_movement']})")  # fmt: skip


def _purged(r: dict[str, Any]) -> str:
    verb = "would be" if r["dry_run"] else "were"
    p = r["purged"]
    return (f"{len(r['archived'])} inbox files older than {r['inbox_before']} {verb} archived\n"
            f"{p['movements']} movements older than {r['history_before']} {verb} purged "
            f"({p['flow_occurrences']} flows, {p['content_files']} content files, "
            f"{p['jobs']} jobs)")  # fmt: skip


@app.command("purge")
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would go")] = False,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Archive inbox files past inbox_retention_days; purge history past history_years."""
    from bdi.admin.operations import purge as apply

    _events_to_stderr()
    _out(_run(data, lambda s: apply(s, dry_run)), as_json, _purged)


@alerts_app.command("test")
def alerts_test(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Send a test message to the operators' addresses, through the configured SMTP server."""
    result = _run(data, lambda s: s.test_alert())
    _out(result, as_json, lambda r: "test alert sent to " + ", ".join(r["sent_to"]))


# --- the console's operators, the inboxes, the audit log (issue 16) ------------------------
operator_app = typer.Typer(help="Operators of the console /exploitation/ (not participants).")
app.add_typer(operator_app, name="operator")


def _operator_row(o: dict[str, Any]) -> str:
    totp = "totp" if o["totp"] else "-"
    return f"{o['name']:20}  {o['state']:8}  {totp:4}  {o['email']}"


@operator_app.command("add")
def operator_add(
    name: Annotated[str, typer.Argument(help="login name, e.g. marie.durand")],
    email: Annotated[str, typer.Option(help="contact e-mail")],
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an operator account; prints its issued password once."""
    from bdi.admin.operators import add_operator

    result = _run(data, lambda s: add_operator(s, name, email))
    _out(result, as_json, lambda r: f"operator {r['name']} added\n"
                                    f"password (shown once): {r['password']}")  # fmt: skip


@operator_app.command("list")
def operator_list(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Every operator with its state, second factor and e-mail."""
    from bdi.admin.operators import list_operators

    result = _run(data, list_operators)
    _out(result, as_json, lambda rows: "\n".join(map(_operator_row, rows)) or "no operator")


@operator_app.command("disable")
def operator_disable(name: str, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Refuse its logins and close its console sessions."""
    from bdi.admin.operators import set_operator_active

    _out(_run(data, lambda s: set_operator_active(s, name, False)), as_json, _operator_row)


@operator_app.command("enable")
def operator_enable(name: str, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Let it log in again."""
    from bdi.admin.operators import set_operator_active

    _out(_run(data, lambda s: set_operator_active(s, name, True)), as_json, _operator_row)


@operator_app.command("reset-password")
def operator_reset_password(
    name: str,
    reset_totp: Annotated[bool, typer.Option("--reset-totp", help="remove its TOTP too")] = False,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a new password (printed once); its console sessions are closed."""
    from bdi.admin.operators import reset_operator_password

    result = _run(data, lambda s: reset_operator_password(s, name, reset_totp))
    _out(result, as_json, lambda r: f"password of {r['name']} (shown once): {r['password']}")


def _inbox_row(b: dict[str, Any]) -> str:
    oldest = b["oldest"] or "-"
    return f"{b['participant']:10}  {b['files']:>6} files  {b['bytes']:>12} bytes  {oldest}"


@app.command("inboxes")
def inboxes(data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """What waits in each inbox: files, bytes, the oldest; the largest backlog first."""
    result = _run(data, lambda s: s.inboxes())
    _out(result, as_json, lambda rows: "\n".join(map(_inbox_row, rows)) or "no participant")


def _audit_row(e: dict[str, Any]) -> str:
    where = e["address"] or "-"
    return f"{e['at']}  {e['actor']:24}  {where:15}  {e['action']:26}  {e['target']}  {e['detail']}"


@app.command("audit")
def audit_log(
    search: Annotated[str, typer.Option(help="words every event shown holds")] = "",
    since: Annotated[str | None, typer.Option("--from", help="first day, AAAA-MM-JJ")] = None,
    until: Annotated[str | None, typer.Option("--to", help="last day, AAAA-MM-JJ")] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log: who did what, when, from where."""
    from datetime import date

    try:
        start, end = (date.fromisoformat(d) if d else None for d in (since, until))
    except ValueError as exc:
        raise _fail(f"not a day (AAAA-MM-JJ): {exc}") from exc
    result = _run(data, lambda s: s.audit_log(search, start, end, 1, limit))
    _out(result["events"], as_json, lambda rows: "\n".join(map(_audit_row, rows)) or "no event")

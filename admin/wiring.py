"""Build the admin service over an initialised data folder."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import partial

from bdi.admin.service import AdminService
from bdi.config import Settings
from bdi.datadir import hub_key_file, open_hub, write_admin_token
from bdi.hub import Hub
from bdi.mailbox.retention import RetentionPolicy


def service_for(hub: Hub, actor: str) -> AdminService:
    return AdminService(
        store=hub.store,
        pgp=hub.pgp,
        mailboxes=hub.mailboxes,
        layout=hub.layout,
        hub_public_key=hub_key_file(hub.settings).read_text(),
        new_token=partial(write_admin_token, hub.settings),
        actor=actor,
        settings=hub.settings,
        retention=RetentionPolicy.under(
            hub.settings.data, hub.settings.inbox_retention_days, hub.settings.history_years
        ),
    )


@contextlib.asynccontextmanager
async def admin_service(settings: Settings, actor: str = "cli") -> AsyncIterator[AdminService]:
    hub = await open_hub(settings)
    try:
        yield service_for(hub, actor)
    finally:
        await hub.store.engine.dispose()

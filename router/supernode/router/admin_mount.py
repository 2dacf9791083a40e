"""Mounts the admin API (usage export, tenants) on the app when admission/metering are configured.

The gatekeeper and meter are built in the app's lifespan, after routes are declared, so the admin
routes reach them through `app.state.router` at request time.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from supernode.router.config import RouterConfig


class _LateBound:
    """`UsageSource` + `TenantAdmin` over whatever the lifespan put on `app.state.router`."""

    def __init__(self, app: FastAPI):
        self._app = app

    def _state(self) -> Any:
        return self._app.state.router

    def rows(self, **kw: Any) -> list[dict[str, Any]]:
        return list(self._state().meter.rows(**kw))

    def totals(self, **kw: Any) -> list[dict[str, Any]]:
        return list(self._state().meter.totals(**kw))

    def tenants(self) -> list[dict[str, Any]]:
        return list(self._state().gatekeeper.tenants())

    def reload_tenants(self) -> bool:
        return bool(self._state().gatekeeper.reload_tenants())


def mount_admin(app: FastAPI, config: RouterConfig) -> None:
    if not (config.admission and config.metering):
        return  # no ledger or no tenants: nothing to administer
    from supernode.router.admin import make_admin_key_check, make_admin_router
    from supernode.router.admission.config import AdmissionConfig

    admin = AdmissionConfig.model_validate(config.admission).admin
    bound = _LateBound(app)
    app.include_router(make_admin_router(bound, bound, make_admin_key_check(admin)))


async def start_gatekeeper(gatekeeper: Any) -> None:
    """The admission gatekeeper owns background loops (tenants reload, capacity poll)."""
    start = getattr(gatekeeper, "start", None)
    if start is not None:
        await start()


async def stop_gatekeeper(gatekeeper: Any) -> None:
    stop = getattr(gatekeeper, "stop", None)
    if stop is not None:
        await stop()

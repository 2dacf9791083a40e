"""The gatekeeper with its owned background tasks: tenants-file reload (mtime poll) and capacity poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from supernode.router.admission.gate import AdmissionGatekeeper
from supernode.router.admission.tenants import TenantsFileError, file_signature, load_directory

log = logging.getLogger("supernode.router.admission")


class Gatekeeper(AdmissionGatekeeper):
    """``start()`` / ``stop()`` are owned by the app lifespan; both are idempotent."""

    _tasks: list[asyncio.Task[None]]
    _signature: tuple[int, int, int] | None = None

    def _path(self) -> Path | None:
        return self.config.tenants_file

    def reload_tenants(self) -> bool:
        """Re-read the tenants file now. Returns True when it changed and loaded; on a bad file the
        previous tenants stay in force (logged, counted) and TenantsFileError is raised."""
        path = self._path()
        if path is None:
            return False
        sig = file_signature(path)
        try:
            if sig is None:
                if self.directory.enabled:
                    log.error(
                        "tenants file %s disappeared; keeping the %d tenants loaded",
                        path,
                        len(self.directory.entries()),
                    )
                self._signature = None
                return False
            directory = load_directory(path)
        except (TenantsFileError, OSError) as exc:
            self._signature = sig  # do not re-log the same bad file every poll
            self.metrics.tenants_reloads.labels("error").inc()
            log.error("tenants file rejected, keeping the previous tenants: %s", exc)
            raise TenantsFileError(str(exc)) from exc
        self._signature = sig
        self.replace_directory(directory)
        self.metrics.tenants_reloads.labels("ok").inc()
        return True

    def _changed(self) -> bool:
        path = self._path()
        return path is not None and file_signature(path) != self._signature

    async def _watch_tenants(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._changed():
                with contextlib.suppress(TenantsFileError):
                    self.reload_tenants()

    async def _poll_capacity(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.queue_length():
                self.poke()

    async def start(self) -> None:
        if getattr(self, "_tasks", None):
            return
        path = self._path()
        self._signature = file_signature(path) if path is not None else None
        self._tasks = []
        if path is not None and self.config.tenants_reload_seconds > 0:
            self._tasks.append(
                asyncio.create_task(self._watch_tenants(self.config.tenants_reload_seconds), name="tenants-reload")
            )
        if self.config.queue.dispatch_interval_seconds > 0:
            self._tasks.append(
                asyncio.create_task(
                    self._poll_capacity(self.config.queue.dispatch_interval_seconds), name="admission-capacity-poll"
                )
            )

    async def stop(self) -> None:
        tasks, self._tasks = getattr(self, "_tasks", []), []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

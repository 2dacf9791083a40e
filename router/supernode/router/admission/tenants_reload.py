"""The tenants file, re-read when it changes (mtime/size/inode poll), for the Gatekeeper.

A good file replaces the Gatekeeper's tenant directory; a bad one is logged and counted once per
version, and the tenants already loaded stay in force. A file that disappears keeps them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from supernode.router.admission.metrics import AdmissionMetrics
from supernode.router.admission.tenants import TenantDirectory, TenantsFileError, file_signature, load_directory

log = logging.getLogger("supernode.router.admission")


class TenantsFileReload:
    def __init__(self, path: Path | None, current: Callable[[], TenantDirectory],
                 replace: Callable[[TenantDirectory], None], metrics: AdmissionMetrics) -> None:
        self.path = path
        self._current, self._replace, self._metrics = current, replace, metrics
        self.signature: tuple[int, int, int] | None = None  # of the version last read (good or bad)

    def mark_loaded(self) -> None:
        """The file as it is now is the one in force (read at startup)."""
        self.signature = file_signature(self.path) if self.path is not None else None

    def changed(self) -> bool:
        return self.path is not None and file_signature(self.path) != self.signature

    def reload(self) -> bool:
        """Re-read the file now. True when it changed and loaded; on a bad file the previous tenants stay
        in force (logged, counted) and TenantsFileError is raised."""
        path = self.path
        if path is None:
            return False
        sig = file_signature(path)
        try:
            if sig is None:
                current = self._current()
                if current.enabled:
                    log.error("tenants file %s disappeared; keeping the %d tenants loaded", path,
                              len(current.entries()))
                self.signature = None
                return False
            directory = load_directory(path)
        except (TenantsFileError, OSError) as exc:
            self.signature = sig  # do not re-log the same bad file every poll
            self._metrics.tenants_reloads.labels("error").inc()
            log.error("tenants file rejected, keeping the previous tenants: %s", exc)
            raise TenantsFileError(str(exc)) from exc
        self.signature = sig
        self._replace(directory)
        self._metrics.tenants_reloads.labels("ok").inc()
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.changed():
                with contextlib.suppress(TenantsFileError):
                    self.reload()

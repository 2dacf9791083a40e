"""`static` and `local` discovery: an EndpointFile (JSON or YAML), reloaded when its mtime changes.

The local runtime (`supernode up`) rewrites the file; the router picks changes up within one poll
interval. A file that fails to parse keeps the last good endpoint set (and logs why).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import yaml

from supernode.api.endpoints import Endpoint, EndpointFile

log = logging.getLogger("supernode.router.discovery")


def parse_endpoint_file(text: str, *, suffix: str = ".json") -> list[Endpoint]:
    data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    return EndpointFile.model_validate(data or {}).endpoints


class FileDiscovery:
    def __init__(self, path: str | Path, on_change: Callable[[list[Endpoint]], None], poll_interval_s: float = 0.25):
        self.path = Path(path)
        self.on_change = on_change
        self.poll_interval_s = poll_interval_s
        self._stamp: tuple[int, int] | None = None
        self.last_error: str | None = None

    def poll(self) -> bool:
        """Reload if the file changed; True when a new endpoint set was applied."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None:
                log.warning("discovery file %s disappeared; keeping the last endpoints", self.path)
            self.last_error = f"{self.path}: not found"
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            endpoints = parse_endpoint_file(self.path.read_text(), suffix=self.path.suffix)
        except Exception as e:  # any parse/validation error: keep serving with the previous set
            self.last_error = f"{self.path}: {e}"
            log.error("discovery file invalid, keeping the last endpoints: %s", self.last_error)
            return False
        self.last_error = None
        self.on_change(endpoints)
        log.info("discovery: %d endpoints from %s", len(endpoints), self.path)
        return True

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.poll_interval_s)

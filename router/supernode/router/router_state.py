"""What the router's app holds once built (app.state.router): config, tables, services, background tasks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from supernode.router.config import RouterConfig
from supernode.router.contracts import Gatekeeper, Meter
from supernode.router.demand import DemandGate
from supernode.router.discovery.file import FileDiscovery
from supernode.router.discovery.kubernetes import KubernetesDiscovery
from supernode.router.kv_events.feeds import KVEventFeeds
from supernode.router.metrics import RouterMetrics
from supernode.router.proxy import Upstream
from supernode.router.request_path import Service
from supernode.router.routing.profile import Profile
from supernode.router.routing.state import EndpointTable
from supernode.router.stats import Scraper
from supernode.router.tokens.fetch import TokenizerFetcher
from supernode.router.tokens.service import PromptTokens


@dataclass
class RouterState:
    config: RouterConfig
    table: EndpointTable
    profile: Profile
    metrics: RouterMetrics
    gatekeeper: Gatekeeper
    meter: Meter
    service: Service
    upstream: Upstream
    discovery: FileDiscovery | KubernetesDiscovery
    demand: DemandGate
    tokens: PromptTokens
    fetcher: TokenizerFetcher | None = None
    feeds: KVEventFeeds | None = None
    scraper: Scraper | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

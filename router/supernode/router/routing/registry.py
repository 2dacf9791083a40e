"""One registry per plugin kind (filters, scorers, pickers): the names a routing config may use and
how each plugin is built. An unknown name is rejected when the config is parsed (RouterConfig calls
`check`) and again when a profile is built (`build`), naming the kind and the known names."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from supernode.router.routing.cost import CostModel
from supernode.router.routing.plugins import (
    ArgmaxPicker,
    CostScorer,
    Filter,
    HeadroomScorer,
    HealthyFilter,
    KvCacheScorer,
    LoadGuard,
    LoadScorer,
    NotDrainingFilter,
    Picker,
    PowerOfTwoPicker,
    PrefixScorer,
    Scorer,
    ServesModelModeFilter,
    SessionScorer,
)
from supernode.router.routing.precise_index import PreciseIndex
from supernode.router.routing.prefix_index import PrefixIndex, SessionMap

T = TypeVar("T")


class UnknownPlugin(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What plugins share within one profile: the prefix indices, the session map, the load guard."""

    index: PrefixIndex
    precise: PreciseIndex
    sessions: SessionMap
    guard: LoadGuard
    rng: random.Random
    top_k: int = 2
    cost: CostModel = field(default_factory=CostModel)


class Registry(Generic[T]):
    def __init__(self, kind: str, factories: dict[str, Callable[[BuildContext], T]]) -> None:
        self.kind = kind
        self._factories = dict(factories)

    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def check(self, name: str) -> str:
        if name not in self._factories:
            raise UnknownPlugin(f"unknown routing {self.kind} {name!r}; known: {', '.join(self._factories)}")
        return name

    def build(self, name: str, ctx: BuildContext) -> T:
        return self._factories[self.check(name)](ctx)


FILTERS: Registry[Filter] = Registry("filter", {
    "healthy": lambda _: HealthyFilter(),
    "not-draining": lambda _: NotDrainingFilter(),
    "serves-model-mode": lambda _: ServesModelModeFilter(),
})
SCORERS: Registry[Scorer] = Registry("scorer", {
    "prefix": lambda c: PrefixScorer(c.index, c.guard, c.precise),
    "cost": lambda c: CostScorer(c.index, c.guard, c.cost, c.precise),
    "load": lambda _: LoadScorer(),
    "headroom": lambda _: HeadroomScorer(),
    "session": lambda c: SessionScorer(c.sessions, c.guard),
    "kv-cache": lambda _: KvCacheScorer(),
})
PICKERS: Registry[Picker] = Registry("picker", {
    "argmax": lambda _: ArgmaxPicker(),
    "power-of-two": lambda c: PowerOfTwoPicker(c.top_k, c.rng),
})

"""Pure inputs of the operator's autoscaler: router discovery through the Service, signal aggregation over
router replicas, the fleet view of a deployment, pool neighbours and the learned cold start."""

from __future__ import annotations

from typing import Any

from builders import operator_md

from supernode.operator import autoscaling as S
from supernode.operator import demand as D


def pod(name: str, ip: str | None, ready: bool = True, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {"app": "router"}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_router_urls_are_the_ready_pods_the_service_selects() -> None:
    svc = {"spec": {"selector": {"app": "router"}}}
    pods = [pod("a", "10.0.0.2"), pod("b", "10.0.0.3", ready=False), pod("c", None), pod("d", "fd00::1"),
            pod("e", "10.0.0.9", app="other")]
    assert D.router_urls(svc, pods, 8080) == ["http://10.0.0.2:8080/autoscaling/signals",
                                              "http://[fd00::1]:8080/autoscaling/signals"]
    assert D.router_urls({"spec": {}}, pods, 8080) == [], "a Service without a selector selects nothing"


def answer(queued: int, in_flight: int, refused: int = 0, spilled: int = 0, wait: float = 0.0,
           kv: float | None = None, model: str = "m") -> dict[str, Any]:
    pools = [{"model": model, "mode": mode, "queued": queued, "queuedTokens": queued * 10, "inFlight": in_flight,
              "oldestWaitSeconds": wait, "noCapacityTotal": refused, "spilledTotal": spilled}
             for mode in ("non-think", "think-high")]
    return {"pools": [*pools, {"model": "other", "mode": "non-think", "queued": 99, "inFlight": 99}],
            "models": [{"model": model, "kvCacheUsage": kv}]}


def test_signals_add_up_over_router_replicas_and_modes() -> None:
    totals = D.Totals()
    s = D.sample_for({"m"}, {"r1": answer(2, 3, wait=1.5, kv=0.4), "r2": answer(1, 1, wait=4.0, kv=0.6)}, 100.0,
                     totals)
    assert (s.queued, s.in_flight, s.queued_tokens) == (6, 8, 60)
    assert s.queue_wait == 4.0 and s.kv_usage == 0.6 and s.complete


def test_cold_refusals_count_as_queued_demand_and_spills_become_a_rate() -> None:
    totals = D.Totals()
    D.sample_for({"m"}, {"r1": answer(0, 0, refused=3, spilled=10)}, 100.0, totals)
    s = D.sample_for({"m"}, {"r1": answer(0, 0, refused=7, spilled=30)}, 110.0, totals)
    assert s.queued == 8  # (7-3) refused x 2 modes
    assert s.spill_rate == 4.0  # (30-10) x 2 modes / 10 s
    restarted = D.sample_for({"m"}, {"r1": answer(0, 0, refused=1)}, 120.0, totals)
    assert restarted.queued == 0, "a counter reset (router restart) is not demand"


def test_no_answers_is_missing_data() -> None:
    assert not D.sample_for({"m"}, {}, 1.0, D.Totals()).complete


def md_body(name: str, replicas: int, *, observed: bool = True, ready: int | None = None,
            **auto: Any) -> dict[str, Any]:
    body = operator_md(name).accelerator("ascend-910c", 16).parallelism(tensor=16).replicas(replicas).autoscaling(
        0, 4, **auto).dict()
    body["metadata"]["generation"] = 2
    body["status"] = {"observedGeneration": 2 if observed else 1, "replicas": replicas,
                      "readyReplicas": replicas if ready is None else ready}
    return body


def test_view_pending_until_the_last_change_is_observed_and_ready() -> None:
    assert not S.view_of(md_body("a", 2)).pending  # type: ignore[union-attr]
    assert S.view_of(md_body("a", 2, observed=False)).pending  # type: ignore[union-attr]
    assert S.view_of(md_body("a", 2, ready=1)).pending  # type: ignore[union-attr]
    plain = md_body("a", 2)
    del plain["spec"]["autoscaling"]
    assert S.view_of(plain) is None


def test_neighbours_share_the_pool_and_builtin_mode() -> None:
    views = [S.view_of(b) for b in (md_body("pro", 1, priority=100), md_body("flash", 2, priority=10),
                                    md_body("other", 1, pool="elsewhere"), md_body("hpa", 1, mode="External"))]
    me, *rest = [v for v in views if v is not None]
    assert [(n.name, n.priority, n.current) for n in S.neighbours(me, rest)] == [("llm/flash", 10, 2)]


def test_cold_start_is_learned_once_per_scale_up() -> None:
    body = md_body("a", 2)
    body["status"]["autoscaling"] = {"lastScaleTime": "1970-01-01T00:01:40Z", "lastScaleDirection": "Up"}
    view = S.view_of(body)
    assert view is not None and view.lead_time == 300  # the spec's first guess
    lead, learned_for = S.learned_lead_time(view, 100 + 240, None)
    assert lead == 240 and learned_for == 100  # the first observation replaces the guess
    assert S.learned_lead_time(view, 100 + 500, learned_for) == (300, 100)  # already learned from this one


def test_a_draining_group_is_idle_only_when_every_router_says_so() -> None:
    def router(*eps: tuple[int, int, float]) -> dict[str, Any]:
        return {"draining": [{"deployment": "llm/flash", "group": g, "inFlight": f, "engineRunning": run,
                              "engineWaiting": 0, "scraped": True} for g, f, run in eps]
                + [{"deployment": "llm/other", "group": 1, "inFlight": 0, "scraped": False}]}

    answers = {"r1": router((1, 0, 0), (2, 0, 0), (3, 0, 0)), "r2": router((1, 0, 0), (2, 1, 0), (3, 0, 2))}
    assert D.idle_draining("llm/flash", answers) == {1}  # 2: a request open on r2; 3: the engine is busy
    assert D.idle_draining("llm/flash", {"r1": router((1, 0, 0)), "r2": router()}) == set(), "r2 does not know yet"
    assert D.idle_draining("llm/flash", {}) == set()


def test_rollout_deletes_a_drained_group_before_its_timeout() -> None:
    from supernode.operator import rollout

    draining = rollout.Observed(1, "g1", "r", ready=True, draining=True, drain_started=100.0)
    target = rollout.Target(replicas=1, revision="r", drain_timeout=900, now=110.0)
    assert rollout.next_step([draining], target).delete == ()
    drained = rollout.Observed(1, "g1", "r", ready=True, draining=True, drain_started=100.0, drained=True)
    assert rollout.next_step([drained], target).delete == ("g1",)

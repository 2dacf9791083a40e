"""The local runtime behind `supernode up` / `supernode status`: the whole stack on one machine.

Pure parts: `specs` (parse + validate), `layout` (what to run per group), `machine` (supervision
decisions), `routerconf`, `report`. Edges: `procs` (processes), `supervisor` (the loop),
`runtime` (wiring), `detach` (background mode), `status` (HTTP probes).
"""

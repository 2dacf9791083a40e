"""The one Kubernetes REST client the operator and the router share (plain REST over aiohttp)."""

"""Endpoint discovery backends: static / local file, kubernetes."""

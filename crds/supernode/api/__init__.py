"""Supernode api."""

"""Supernode router."""

"""Supernode cli."""

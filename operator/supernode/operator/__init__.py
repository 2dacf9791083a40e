"""Supernode operator."""

"""Torch-free engine core: sequence state, paged block manager with prefix caching, scheduler."""

"""Operational tools shipped with pccl_py (see each module's docstring)."""

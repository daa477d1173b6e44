"""Compilation: the device mesh, XLA options, compile targets and HLO counts."""

"""Compilation and the runtime under it: the device mesh, XLA options, compile
targets and reports, HLO counts, the distributed key-value store."""

"""Measuring programs: speed, memory and compile reports, and their `timing`.

Each is run as `python -m sharp_unet_jax.benchmarks.<name>`; no library
module imports them.
"""

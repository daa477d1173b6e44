"""The model: the Sharp block and U-Net.

Imports nothing else of the package but compilation/meshes.py (shard_map over
the batch), which imports nothing of the package itself.
"""

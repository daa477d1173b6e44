"""Evaluation: metrics, per-image scores, tiled inference, pictures, reports."""

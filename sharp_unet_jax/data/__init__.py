"""Data: TFDS builders, global batches, augmentation, weight maps, image reading."""

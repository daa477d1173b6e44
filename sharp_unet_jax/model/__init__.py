"""The model: the Sharp block and U-Net. Imports nothing else of the package."""

"""Training: the loop, pure steps, the recipe, losses, Orbax checkpoints, restore."""

"""Sharp U-Net in JAX/Flax: a U-Net whose skip connections are sharpened."""

"""The seed experiment and k-fold cross-validation: U-Net vs Sharp U-Net.

  python -m sharp_unet_jax.experiment --config=... --workdir=DIR [--folds=K]

`__main__` holds the flags, `seeds` the seed experiment, `cv` the k-fold
cross-validation, `runs` what both share: the runs' configs, training and
test-set predictions.
"""

"""TFDS builders of the project; importing this package registers them all.

Use them with `tfds.builder(name)` / `tfds.data_source(name)` after
`import sharp_unet_jax.data.datasets`, or with
`tfds build --imports sharp_unet_jax.data.datasets NAME`. They write
`array_record` files (common.FILE_FORMAT), read by example index; TFDS's
`as_dataset` / `tfds.load` do not read that format.

Every builder yields at least:
  image: uint8 (or uint16) array H x W x C at the source's resolution;
  mask:  uint8 array H x W x 1 of class indices (0 = background).
"""

from sharp_unet_jax.data.datasets import (
  covid19_ct,  # noqa: F401
  cvc_clinicdb,  # noqa: F401
  dsb2018,  # noqa: F401
  isbi2012,  # noqa: F401
  isic2018,  # noqa: F401
  lung_ct,  # noqa: F401
  segmentation_folder,  # noqa: F401
  synthetic_lesions,  # noqa: F401
)

"""Sharp U-Net on any folder of images and masks (`segmentation_folder`).

`--config.data_dir=DIR` names the folder that holds `images/` and `masks/`
(files paired by stem; see sharp_unet_jax/data/datasets/segmentation_folder.py).
It is both the TFDS manual folder and the TFDS data dir: `manual_dir` refers
to `data_dir`, so the data set is built on first use into
`DIR/segmentation_folder/<config>/1.0.0/`, beside images/ and masks/, and
each folder keeps its own built copy. (Overriding `manual_dir` sets `data_dir`
too: they are one reference.) TFDS reuses a built copy, so after changing
the files delete `DIR/segmentation_folder` to rebuild.

  python main.py --config=configs/folder.py --config.data_dir=DIR \
      --config.num_classes=1 --workdir=WORKDIR

The builder infers the mask encoding and logs the number of classes (also in
its `info.metadata['num_classes']`): set `--config.num_classes=1` for binary
masks (0/1 or 0/255) and K for class indices 0..K-1. Grey images: add
`--config.dataset=segmentation_folder/grey8 --config.num_channels=1`
(`rgb16` / `grey16` keep 16-bit sources at 16 bits). Images are resized to
`image_size`; both sides must be divisible by 16.

Splits: train / validation / test (70/10/20 by a hash of the file stem); the
paper's protocol is `--config.train_split=paper_train
--config.eval_split=paper_test --config.test_split=paper_test` (no
independent test set).
"""

from configs import default, paper_settings


def get_config():
  """Returns the config for a folder of images and masks."""
  config = default.get_config()

  # --- Data -------------------------------------------------------------------
  # 'segmentation_folder' stores RGB uint8; '/grey8', '/rgb16', '/grey16' too.
  config.dataset = 'segmentation_folder'
  # Required: the folder holding images/ and masks/; TFDS writes beside them.
  # manual_dir is the same reference, so the builder reads the same folder.
  config.manual_dir = config.get_ref('data_dir')
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.test_split = 'test'
  # (height, width) fed to the model.
  config.image_size = (256, 256)
  # 3 = RGB (the default builder config), 1 = grey (segmentation_folder/grey8).
  config.num_channels = 3
  # 1 = binary masks (sigmoid); K = class indices 0..K-1 (softmax). The build
  # logs the value to use.
  config.num_classes = 1

  # --- Model, optimiser and loss: the paper's ----------------------------------
  paper_settings.set_paper_model(config)

  # --- Schedule -------------------------------------------------------------------
  # Total training steps; scale with the size of your train split.
  config.num_train_steps = 2000
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  config.log_every_steps = 20

  return config

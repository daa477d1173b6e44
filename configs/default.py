"""Default config: Sharp U-Net on the embedded synthetic_lesions data set.

Sized to train on a 2-core CPU in a few minutes. Dataset configs build on it
(see configs/isic.py). Every field can be overridden on the command line, e.g.
`--config.model=unet`; an unknown key is an error.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """Returns the default training config."""
  config = ml_collections.ConfigDict()

  # --- Data -----------------------------------------------------------------
  # TFDS name of the data set (registered by `sharp_unet_jax.datasets`).
  config.dataset = 'synthetic_lesions'
  # TFDS data directory; None uses TFDS' default (~/tensorflow_datasets).
  config.data_dir = config_dict.placeholder(str)
  # Folder with manually downloaded source files (TFDS manual_dir); None uses
  # <data_dir>/downloads/manual.
  config.manual_dir = config_dict.placeholder(str)
  # TFDS split names for training, periodic validation and the final test.
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.test_split = 'test'
  # (height, width) fed to the model; images are resized bilinearly and masks
  # by nearest neighbour. Both sides must be divisible by 2**depth.
  config.image_size = (64, 64)
  # Image channels the model expects (3 = RGB, 1 = grey).
  config.num_channels = 3
  # 1 = binary (sigmoid); K > 1 = K classes including background (softmax).
  config.num_classes = 1

  # --- Model ----------------------------------------------------------------
  # 'sharp_unet' (sharpened skip connections) or 'unet'.
  config.model = 'sharp_unet'
  # Kernel of the Sharp block: 'laplacian' (the paper's), 'sharpen' or 'blur'.
  config.sharp_kernel = 'laplacian'
  # Channels of the first level (the paper uses 32); level i has 2**i times it.
  config.num_filters = 16
  # Pooling levels (the paper uses 4).
  config.depth = 4
  # Kernel initialiser: 'glorot_uniform' (the paper's, Keras default),
  # 'lecun_normal' (Flax default) or 'he_normal' (the U-Net paper's).
  config.kernel_init = 'glorot_uniform'
  # Computation dtype: 'float32' or 'bfloat16' (parameters stay float32).
  config.dtype = 'float32'

  # --- Optimiser and loss -----------------------------------------------------
  # Global batch size; must be divisible by the number of devices.
  config.batch_size = 16
  # Adam with the paper's (Keras default) settings.
  config.learning_rate = 1e-3
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-7
  # Loss: 'cross_entropy' (the paper's: binary or categorical), 'dice' (soft
  # Dice) or 'cross_entropy_dice' (their sum).
  config.loss = 'cross_entropy'

  # --- Schedule ----------------------------------------------------------------
  # Total training steps.
  config.num_train_steps = 400
  # Seed of parameter init and data order.
  config.seed = 0

  # --- Evaluation, logging and checkpoints -------------------------------------
  # Evaluate on eval_split every this many steps (and at the end).
  config.eval_every_steps = 200
  # Batch size of evaluation; the last batch is padded and masked.
  config.eval_batch_size = 32
  # Write train metrics every this many steps.
  config.log_every_steps = 100
  # Save a checkpoint every this many steps (and at the end).
  config.checkpoint_every_steps = 200
  # Keep this many most recent checkpoints.
  config.max_checkpoints_to_keep = 3
  # Number of validation images shown as overlays in TensorBoard.
  config.num_summary_images = 4

  return config

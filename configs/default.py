"""Default config: Sharp U-Net on the embedded synthetic_lesions data set.

Sized to train on a 2-core CPU in a few minutes. Dataset configs build on it
(see configs/isic.py). Every field can be overridden on the command line, e.g.
`--config.model=unet`; an unknown key is an error.
"""

import ml_collections
from ml_collections import config_dict


def _data(config: ml_collections.ConfigDict) -> None:
  """Data keys."""
  # TFDS name of the data set (registered by `sharp_unet_jax.data.datasets`).
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
  # Threads that read, decode and resize examples (and weight maps) per host.
  config.input_workers = 4
  # Batches read ahead of the step, and as many already sent to the devices.
  config.prefetch_batches = 2


def _model(config: ml_collections.ConfigDict) -> None:
  """Model keys."""
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
  # Computation dtype: 'float32', 'bfloat16' or 'auto' (bfloat16 in programs
  # compiled for TPU or GPU, float32 on CPU); parameters stay float32.
  config.dtype = 'float32'
  # How the network is computed (same results): 'auto' (fast CPU forms in
  # programs compiled for CPU, 'tpu_packed' for TPU, 'gpu_cudnn' for GPU),
  # 'reference' (the design's grouped convolution, nn.max_pool and
  # transposed conv everywhere), 'cpu_fast', 'tpu_packed' (the levels under
  # 128 channels with several images in the lanes) or 'gpu_cudnn' (the
  # up-convolution as cuDNN's data-gradient convolution); docs/performance.md.
  config.implementation = 'auto'


def _optimiser_and_loss(config: ml_collections.ConfigDict) -> None:
  """Optimiser and loss keys."""
  # Global batch size; must be divisible by the number of devices.
  config.batch_size = 16
  # Adam with the paper's (Keras default) settings.
  config.learning_rate = 1e-3
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-7
  # Loss: 'cross_entropy' (the paper's: binary or categorical), 'dice' (soft
  # Dice), 'cross_entropy_dice' (their sum) or 'focal' (focal loss, gamma 2).
  config.loss = 'cross_entropy'
  # Weight the loss per pixel by the U-Net paper's border weight map
  # w = w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)), from instance labels where the
  # data set has them (dsb2018), else connected components (weight_map.py).
  config.weight_map = False
  # w0 of the weight map (the U-Net paper's 10).
  config.weight_map_w0 = 10.0
  # sigma of the weight map in pixels of image_size (the U-Net paper's 5).
  config.weight_map_sigma = 5.0
  # w_c balances class frequencies of the train split (mean weight 1); False
  # makes w_c = 1.
  config.weight_map_balance = True


def _augmentation(config: ml_collections.ConfigDict) -> None:
  """Augmentation keys (on device, in the train step; augment.py)."""
  config.augment = ml_collections.ConfigDict()
  # Master switch; the paper trains without augmentation.
  config.augment.enabled = False
  # Random horizontal and vertical flips.
  config.augment.flip = True
  # Random multiples of 90 degrees (square image_size only; else skipped).
  config.augment.rot90 = True
  # Uniform random rotation in [-x, x] degrees (0 = off).
  config.augment.rotation_degrees = 10.0
  # Isotropic zoom, log-uniform in [1/(1+x), 1+x] (0 = off).
  config.augment.scale = 0.1
  # Shift, uniform in [-x, x] times the image side, per axis (0 = off).
  config.augment.shift = 0.05
  # Elastic deformation (U-Net paper): Gaussian displacements with this std in
  # pixels of image_size on a coarse grid, bicubic to every pixel (0 = off).
  config.augment.elastic_sigma = 10.0
  # Nodes per side of the elastic grid (the U-Net paper's 3 x 3).
  config.augment.elastic_grid = 3
  # Brightness offset, uniform in [-x, x] (images are in [0, 1]; 0 = off).
  config.augment.brightness = 0.1
  # Contrast factor around the image mean, uniform in [1-x, 1+x] (0 = off).
  config.augment.contrast = 0.1
  # Gamma, exp(uniform(-x, x)) (0 = off).
  config.augment.gamma = 0.1


def _schedule(config: ml_collections.ConfigDict) -> None:
  """Schedule keys."""
  # Total training steps.
  config.num_train_steps = 400
  # Seed of parameter init, data order and augmentation.
  config.seed = 0
  # Learning-rate schedule (schedules.py): 'constant' (learning_rate for
  # num_train_steps steps), 'cosine' (linear warmup, then cosine decay to
  # cosine_end_factor * learning_rate at num_train_steps) or 'plateau' (the
  # paper's reduce-on-plateau on the monitored validation metric).
  config.schedule = 'constant'
  # 'cosine': warmup steps from 0 to learning_rate.
  config.warmup_steps = 0
  # 'cosine': final learning rate as a fraction of learning_rate.
  config.cosine_end_factor = 0.0
  # 'plateau': multiply the rate by this factor (the paper's 0.1) ...
  config.plateau_factor = 0.1
  # ... after this many evaluations without improvement (the paper's 10) ...
  config.plateau_patience = 10
  # ... where improving means by more than this, absolute (the paper's 1e-4) ...
  config.plateau_min_delta = 1e-4
  # ... and never below this rate (the paper's 1e-8).
  config.plateau_min_lr = 1e-8
  # Validation metric that drives 'plateau', early stopping and the best
  # checkpoint: 'soft_iou' (the paper's soft Jaccard), 'iou', 'iou_per_image',
  # 'dice', 'dice_per_image' or 'loss' (with monitor_mode='min').
  config.monitor_metric = 'soft_iou'
  # 'max' or 'min': whether larger monitor_metric values are better.
  config.monitor_mode = 'max'
  # Stop after early_stopping_patience evaluations without improvement, then
  # restore the best state (kept in WORKDIR/checkpoints_best) for the test.
  config.early_stopping = False
  # Evaluations without improvement before stopping (the paper's 20).
  config.early_stopping_patience = 20
  # Improvement needed to reset the patience and save a new best checkpoint.
  config.early_stopping_min_delta = 0.0
  # Keep the best-scoring state in WORKDIR/checkpoints_best (always on with
  # early_stopping). The paper protocol: configs/paper.py.
  config.save_best_checkpoint = False


def _evaluation_logging_and_checkpoints(config: ml_collections.ConfigDict) -> None:
  """Evaluation, logging and checkpoints keys."""
  # Evaluate on eval_split every this many steps (and at the end).
  config.eval_every_steps = 200
  # Batch size of evaluation; the last batch is padded and masked.
  config.eval_batch_size = 32
  # Write train metrics every this many steps.
  config.log_every_steps = 100
  # Save a checkpoint every this many steps (and at the end).
  config.checkpoint_every_steps = 200
  # Also save once this many seconds have passed since the last save, so that
  # a hard failure (a host lost without SIGTERM) loses at most this much work
  # whatever the step time; 0 turns it off. Process 0's clock decides for all.
  config.checkpoint_every_seconds = 600.0
  # Keep this many most recent checkpoints.
  config.max_checkpoints_to_keep = 3
  # Number of validation images shown as overlays in TensorBoard.
  config.num_summary_images = 4


def get_config() -> ml_collections.ConfigDict:
  """Returns the default training config."""
  config = ml_collections.ConfigDict()
  _data(config)
  _model(config)
  _optimiser_and_loss(config)
  _augmentation(config)
  _schedule(config)
  _evaluation_logging_and_checkpoints(config)
  return config

"""The data set configs: the paper's settings, registered data sets, splits."""

import importlib

import pytest
import tensorflow_datasets as tfds

import sharp_unet_jax.data.datasets  # noqa: F401  (registers the builders)
from sharp_unet_jax.data.datasets import splits

# config file: (dataset, image_size, num_channels, num_classes), from the paper.
PAPER = {
  'isic': ('isic2018', (192, 256), 3, 1),
  'dsb2018': ('dsb2018', (256, 256), 3, 1),
  'lung_ct': ('lung_ct', (256, 256), 1, 1),
  'cvc_clinicdb': ('cvc_clinicdb', (192, 256), 3, 1),
  'isbi2012': ('isbi2012', (256, 256), 1, 1),
  'covid19_ct': ('covid19_ct', (512, 512), 1, 4),
  'folder': ('segmentation_folder', (256, 256), 3, 1),
}


@pytest.mark.parametrize('name', sorted(PAPER))
def test_config_has_the_papers_settings(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  dataset, image_size, channels, classes = PAPER[name]
  assert config.dataset == dataset
  assert tuple(config.image_size) == image_size
  assert all(side % 2**config.depth == 0 for side in config.image_size)
  assert (config.num_channels, config.num_classes) == (channels, classes)
  assert (config.batch_size, config.learning_rate) == (16, 1e-3)
  assert (config.num_filters, config.depth, config.loss) == (32, 4, 'cross_entropy')
  assert tfds.builder_cls(dataset.split('/')[0]).name == dataset
  assert (config.train_split, config.eval_split, config.test_split) == (
    splits.STANDARD_SPLITS
  )


def test_builder_channels_and_classes_match_configs():
  for name, (dataset, _, channels, classes) in PAPER.items():
    if name == 'folder':
      continue
    builder_cls = tfds.builder_cls(dataset)
    assert builder_cls.NUM_CHANNELS == channels, name
    assert builder_cls.NUM_CLASSES == max(classes, 2), name


def test_folder_config_reads_and_writes_data_dir():
  from configs import folder  # noqa: PLC0415

  config = folder.get_config()
  assert config.manual_dir is None
  config.data_dir = '/data/my_folder'
  assert config.manual_dir == '/data/my_folder'

"""The paper's test metric per data set, against values worked out by hand."""

import numpy as np
import pytest

from sharp_unet_jax.evaluation import experiment_report, paper_protocol

# One image of 2 pixels, 3 classes (background 0): softmax rows and truth.
PROBABILITIES = np.array([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]])
TRUTH = np.array([[0, 2]])


def test_each_data_set_gets_the_protocol_of_the_reference_code():
  # The reference notebooks round the sigmoid output on every binary set and
  # leave the COVID-19 softmax unrounded against its 4-channel one-hot.
  binary = ['lung_ct', 'dsb2018', 'isic2018/default', 'isbi2012', 'cvc_clinicdb']
  for name in binary + ['synthetic_lesions/small', 'segmentation_folder']:
    assert paper_protocol.for_dataset(name) == paper_protocol.HARD_FOREGROUND, name
  assert paper_protocol.for_dataset('covid19_ct:1.0.0') == paper_protocol.SOFT_ONE_HOT


def test_soft_one_hot_by_hand():
  # One-hot truth: pixel 0 -> [1, 0, 0], pixel 1 -> [0, 0, 1]. sum(y p) = 0.5
  # + 0.3 = 0.8; sum y = sum p = 2 (one per pixel). Jaccard = 0.8 / (2 + 2 -
  # 0.8) = 0.25; Dice = 2 x 0.8 / 4 = 0.4.
  jaccard, dice = paper_protocol.scores(
    paper_protocol.SOFT_ONE_HOT, PROBABILITIES, TRUTH, num_classes=3
  )
  assert (jaccard, dice) == pytest.approx((25.0, 40.0))


def test_hard_foreground_on_the_same_image_by_hand():
  # Threshold 0.5, classes 1 and 2 only: class 1 is predicted at pixel 1
  # (0.6) but absent from the truth, class 2 is true at pixel 1 but never
  # predicted: both score 0, so the hard protocol gives 0 where the paper's
  # COVID-19 metric gives 25 / 40.
  jaccard, dice = paper_protocol.scores(
    paper_protocol.HARD_FOREGROUND, PROBABILITIES, TRUTH, num_classes=3
  )
  assert (jaccard, dice) == (0.0, 0.0)
  # A perfect soft prediction scores 100 either way.
  perfect = np.eye(3)[TRUTH]
  for protocol in paper_protocol.DESCRIPTIONS:
    assert paper_protocol.scores(protocol, perfect, TRUTH, 3) == (100.0, 100.0)


def test_soft_one_hot_refuses_a_binary_model():
  with pytest.raises(ValueError, match='K >= 2'):
    paper_protocol.soft_one_hot_scores(np.zeros((2, 2, 1)), np.zeros((2, 2)), 1)
  with pytest.raises(ValueError, match='Unknown paper protocol'):
    paper_protocol.scores('soft', PROBABILITIES, TRUTH, 3)


def test_report_shows_ours_under_the_papers_metric_where_it_differs():
  models = {
    m: {
      'paper_metric': {
        'jaccard': {'mean': j, 'std': 0.0},
        'dice': {'mean': d, 'std': 0.0},
      }
    }
    for m, j, d in (('unet', 80.0, 90.0), ('sharp_unet', 81.0, 91.0))
  }
  summary = {
    'dataset': 'covid19_ct',
    'models': models,
    'paper': experiment_report.paper_numbers('covid19_ct'),
    'paper_protocol': paper_protocol.SOFT_ONE_HOT,
  }
  lines = experiment_report._paper_rows(summary)
  assert lines[0] == (
    "| covid19_ct (ours, the paper's metric) | 80.00 ± 0.00 | 81.00 ± 0.00 | "
    '90.00 ± 0.00 | 91.00 ± 0.00 |'
  )
  assert lines[1].startswith('| COVID-19 CT (paper) | 85.25 ± 1.96')
  summary.update(dataset='lung_ct', paper=experiment_report.paper_numbers('lung_ct'))
  summary['paper_protocol'] = paper_protocol.HARD_FOREGROUND
  assert experiment_report._paper_rows(summary)[0].startswith('| Lung (paper)')

"""Validation curves of training runs, read back from their TensorBoard events.

Training writes `eval/<metric>` after every evaluation (train.py, through
clu's writer). This reads those scalars from a run folder's event files and
draws, per model, the mean over runs and the band between the lowest and
highest run at each step, as a PNG (matplotlib, Agg backend).
"""

import glob
import os

import numpy as np

TAG = 'eval/dice_per_image'


def read_curve(directory: str, tag: str = TAG) -> dict[int, float]:
  """{step: value} of scalar `tag` in a run folder's event files.

  A resumed run may write a step twice; the later file wins.
  """
  import tensorflow as tf  # noqa: PLC0415  (only to read event files)

  curve = {}
  for path in sorted(glob.glob(os.path.join(directory, 'events.out.tfevents.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          curve[int(event.step)] = float(tf.make_ndarray(value.tensor))
  return curve


def band(curves: list[dict[int, float]]) -> dict[str, list]:
  """Mean, min and max over runs at each step some run evaluated.

  Runs stopped early simply have no value at later steps; each step's
  statistics use the runs that reached it (their number is in `runs`).
  """
  steps = sorted(set().union(*curves)) if curves else []
  rows = [[c[s] for c in curves if s in c] for s in steps]
  return {
    'step': steps,
    'mean': [float(np.mean(r)) for r in rows],
    'low': [float(np.min(r)) for r in rows],
    'high': [float(np.max(r)) for r in rows],
    'runs': [len(r) for r in rows],
  }


def plot(bands: dict[str, dict], path: str, title: str, scale: float = 100.0) -> str:
  """Draws each model's band (mean line, min-max shading) to a PNG at `path`.

  Args:
    bands: {label: band(...)}.
    path: the PNG to write.
    title: the figure's title.
    scale: values are multiplied by this (100: Dice in points).

  Returns:
    `path`.
  """
  import matplotlib  # noqa: PLC0415

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # noqa: PLC0415

  figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=120)
  for label, curve in bands.items():
    steps = np.asarray(curve['step'])
    line = axes.plot(steps, scale * np.asarray(curve['mean']), label=label)[0]
    axes.fill_between(
      steps,
      scale * np.asarray(curve['low']),
      scale * np.asarray(curve['high']),
      color=line.get_color(),
      alpha=0.25,
      linewidth=0,
    )
  axes.set_xlabel('training step')
  axes.set_ylabel('validation Dice (per-image mean, x 100)')
  axes.set_title(title, fontsize=10)
  axes.grid(alpha=0.3)
  axes.legend(loc='lower right')
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)
  return path

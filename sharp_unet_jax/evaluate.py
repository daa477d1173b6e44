r"""Scores a trained model on a data set split, per image, like papers do.

  python -m sharp_unet_jax.evaluate --workdir=DIR [--split=test] \
      [--output_dir=OUT] [--checkpoint=latest|best|STEP] [--num_worst=8] \
      [--spacing=ROW_MM,COL_MM] [--data_dir=TFDS_DIR]

The split is read as training reads it (at config.image_size), a batch at a
time. On several processes (the distributed flags of main.py:
--coordinator_address, --num_processes, --process_id, or --distributed) each
predicts and scores its share of the batches; the rows are gathered and
process 0 writes the reports, the same as one process writes. Predictions
are hard labels as in training's metrics (logit > 0, or argmax). Written to
OUT (default WORKDIR/eval_<split>):

  per_image.csv  one row per image: Dice, IoU, precision, recall and HD95,
                 averaged over foreground classes and per class, the pixel
                 counts, the empty-mask case per class, and the paper
                 protocol's Jaccard and Dice.
  summary.json   mean, std, median, min and max over images of each score;
                 dataset-level (pooled) Dice and IoU; the paper protocol;
                 the counts of empty-mask cases.
  summary.md     the same as tables, with the paper protocol and this
                 evaluation side by side.
  worst/         image | truth | prediction panels of the N images of lowest
                 Dice.

The paper protocol (Sharp U-Net's evaluation code), per data set
(evaluation/paper_protocol.py): on the binary sets, probabilities
thresholded at 0.5, hard Jaccard and Dice per image, mean over images, x 100;
on covid19_ct, soft probabilities against the 4-channel one-hot truth,
background included.
Empty masks follow per_image_metrics' policy: both empty scores 1 (HD95 0),
exactly one empty scores 0 (HD95 = the image diagonal); the cases are counted
in the summary, never turned into NaN. With several foreground classes, a
class absent from both truth and prediction is left out of the image's mean
(counted in the summary); --absent_classes=count_absent keeps the paper
code's rule, which averages it in as 1. HD95 is in pixels of the evaluated
(resized) images, or in mm with --spacing (the pixel size at that size).
"""

import os
from typing import Iterator, Optional

from absl import flags, logging
import jax
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

from sharp_unet_jax import cli
from sharp_unet_jax.compilation import meshes, xla_options
from sharp_unet_jax.data import image_io, input_pipeline
from sharp_unet_jax.errors import UserError
from sharp_unet_jax.evaluation import (
  metrics,
  paper_protocol,
  per_image_metrics,
  split_report,
  split_summary,
)
from sharp_unet_jax.training import distributed, launch_flags, restore

FLAGS = flags.FLAGS
SCORES = per_image_metrics.SCORE_NAMES
SKIP_ABSENT = per_image_metrics.SKIP_ABSENT


def _check_arguments(num_worst: int, rule: str) -> None:
  """Raises UserError for a negative --num_worst or an unknown rule."""
  if num_worst < 0:
    raise UserError(f'--num_worst={num_worst} must be 0 or more.')
  if rule not in per_image_metrics.ABSENT_RULES:
    rules = list(per_image_metrics.ABSENT_RULES)
    raise UserError(f'--absent_classes={rule} must be one of {rules}.')


def parse_spacing(value: Optional[str]) -> Optional[tuple[float, float]]:
  """'0.5' or '0.5,0.7' (mm per pixel along rows, columns) -> a pair, or None.

  Raises:
    UserError: for anything but one or two positive numbers.
  """
  if value is None or not str(value).strip():
    return None
  try:
    sides = [float(s) for s in str(value).split(',')]
  except ValueError:
    sides = []
  if len(sides) not in (1, 2) or not all(s > 0 for s in sides):
    raise UserError(f"--spacing={value} must be 'MM' or 'ROW_MM,COL_MM', positive.")
  return (sides[0], sides[-1])


def _forward(restored: restore.Restored, mesh: jax.sharding.Mesh):
  """(params, images) -> (hard labels, probabilities), compiled for `mesh`.

  The images and both outputs stay sharded over the mesh's 'data' axis.

  Raises:
    UserError: if config.eval_batch_size does not divide over the mesh.
  """
  num_classes = restored.config.num_classes
  restored = restored.for_platform(meshes.platform(mesh), mesh.devices.flat[0])
  input_pipeline.check_batch_size(
    restored.config.eval_batch_size, 'eval_batch_size', mesh.size
  )
  data_sharding = NamedSharding(mesh, PartitionSpec(meshes.AXIS))

  def forward(params, images):
    logits = restored.apply(params, images)
    if num_classes == 1:
      probabilities = jax.nn.sigmoid(logits)
    else:
      probabilities = jax.nn.softmax(logits, axis=-1)
    return metrics.hard_predictions(logits), probabilities

  return jax.jit(
    forward,
    in_shardings=(NamedSharding(mesh, PartitionSpec()), data_sharding),
    out_shardings=data_sharding,
    compiler_options=xla_options.compute_options(meshes.platform(mesh)),
  )


def predict_batches(
  restored: restore.Restored, data, mesh: Optional[jax.sharding.Mesh] = None
) -> Iterator[tuple]:
  """Predicts this process's share of a split, a batch at a time.

  The split's batches of config.eval_batch_size are shared out among the
  processes in contiguous runs; each process predicts its own over `mesh`
  (default: its local devices). Every batch is padded to the full size (one
  compilation).

  Yields:
    (indices, examples, labels, probabilities): example indices, the
    examples as `data.read` returns them, hard labels (n, H, W) uint8 and
    probabilities (n, H, W, C).

  Raises:
    UserError: if config.eval_batch_size does not divide over the mesh.
  """
  mesh = meshes.data_mesh(jax.local_devices()) if mesh is None else mesh
  forward = _forward(restored, mesh)
  params = jax.device_put(restored.params, NamedSharding(mesh, PartitionSpec()))
  data_sharding = NamedSharding(mesh, PartitionSpec(meshes.AXIS))
  batch_size = restored.config.eval_batch_size
  for start in distributed.process_share(range(0, len(data), batch_size)):
    indices = np.arange(start, min(start + batch_size, len(data)))
    examples = data.read(indices)
    images = input_pipeline.normalize(examples['image'])
    padded = np.concatenate(
      [images, np.repeat(images[:1], batch_size - len(indices), axis=0)]
    )
    outputs = forward(params, jax.device_put(padded, data_sharding))
    labels, probabilities = jax.device_get(outputs)
    yield (
      indices,
      examples,
      np.asarray(labels, np.uint8)[: len(indices)],
      np.asarray(probabilities)[: len(indices)],
    )


def score_images(
  indices,
  examples,
  labels,
  probabilities,
  num_classes,
  spacing,
  rule=SKIP_ABSENT,
  protocol=paper_protocol.HARD_FOREGROUND,
) -> list[dict]:
  """One CSV row per image: scores averaged over classes, then per class.

  `rule` (per_image_metrics.ABSENT_RULES) says whether a class absent from
  both truth and prediction enters the image's mean over classes; `protocol`
  (paper_protocol.for_dataset) is what paper_jaccard and paper_dice compute.
  """
  rows = []
  for k, index in enumerate(indices):
    true, pred = examples['mask'][k], labels[k]
    classes = per_image_metrics.image_scores(pred, true, num_classes, spacing)
    jaccard, dice = paper_protocol.scores(
      protocol, probabilities[k], true, num_classes, rule
    )
    absent = [c.empty_case == per_image_metrics.BOTH_EMPTY for c in classes]
    ident = examples['id'][k]
    row = {
      'index': int(index),
      'id': ident.decode('utf-8', 'replace') if isinstance(ident, bytes) else ident,
    }
    row.update(
      {
        k: per_image_metrics.mean_over_classes(
          [getattr(c, k) for c in classes], absent, rule
        )
        for k in SCORES
      }
    )
    left_out = rule == SKIP_ABSENT and len(classes) > 1 and not all(absent)
    row.update(paper_jaccard=jaccard, paper_dice=dice)
    row['classes_left_out'] = sum(absent) if left_out else 0
    for c, scores in enumerate(classes, start=1):
      for key in (*SCORES, 'intersection', 'predicted', 'true', 'empty_case'):
        row[f'{key}_class{c}'] = getattr(scores, key)
    rows.append(row)
  return rows


def score_split(
  restored, data, num_worst: int, spacing, mesh=None, rule=SKIP_ABSENT
) -> tuple[list, dict]:
  """Scores a split on every process; each gets all rows, in split order.

  Each process predicts its share over `mesh` (default: its local devices).

  Returns:
    (rows, worst_labels): the per-image rows; {index: hard labels} of the
    `num_worst` lowest-Dice images (only those are kept, never the split's).
  """
  rows, candidates = [], {}
  num_classes = restored.config.num_classes
  protocol = paper_protocol.for_dataset(restored.config.dataset)
  for indices, examples, labels, probabilities in predict_batches(restored, data, mesh):
    batch_rows = score_images(
      indices, examples, labels, probabilities, num_classes, spacing, rule, protocol
    )
    rows += batch_rows
    for k, row in enumerate(batch_rows):
      candidates[row['index']] = (split_report.worst_first(row), labels[k])
    keep = sorted(candidates.values(), key=lambda c: c[0])[:num_worst]
    candidates = {key[2]: (key, label) for key, label in keep}
  rows = sorted(sum(distributed.gather_objects(rows), []), key=lambda r: r['index'])
  worst = {}
  for part in distributed.gather_objects(candidates):
    worst.update({index: label for index, (_, label) in part.items()})
  return rows, worst


def _load_split(config, split: Optional[str], data_dir: Optional[str]):
  """(split name, its data): `split` (default: the test split) of `config`.

  Raises:
    UserError: if the split holds no images.
  """
  if data_dir:
    config.data_dir = data_dir
  split = split or config.test_split
  data = input_pipeline.load_split(config, split)
  if not len(data):
    raise UserError(f'Split {split!r} of {config.dataset} has no images.')
  return split, data


def _summary(restored, workdir, split, rows, spacing, absent_classes) -> dict:
  """The run, split and scores of summary.json, with the paper's protocol named."""
  config = restored.config
  summary = {
    'workdir': workdir,
    'checkpoint': restored.checkpoint,
    'step': restored.step,
    'dataset': config.dataset,
    'split': split,
    'image_size': list(config.image_size),
    **split_summary.summarize(rows, config.num_classes, spacing, absent_classes),
  }
  protocol = paper_protocol.for_dataset(config.dataset)
  summary['paper_protocol'].update(
    name=protocol, description=paper_protocol.DESCRIPTIONS[protocol]
  )
  return summary


def evaluate(
  workdir: str,
  split: Optional[str] = None,
  output_dir: Optional[str] = None,
  checkpoint: str = 'latest',
  num_worst: int = 8,
  spacing: Optional[tuple[float, float]] = None,
  data_dir: Optional[str] = None,
  mesh: Optional[jax.sharding.Mesh] = None,
  absent_classes: str = SKIP_ABSENT,
) -> dict:
  """Scores a workdir's model on a split and writes the reports.

  Args:
    workdir: the training workdir.
    split: the TFDS split; default: config.test_split.
    output_dir: default WORKDIR/eval_<split>.
    checkpoint: 'latest', 'best' or a step number.
    num_worst: how many lowest-Dice images to draw.
    spacing: (row, column) pixel size in mm for HD95; None: pixels.
    data_dir: the TFDS data dir, when it moved since training.
    mesh: the ('data',) mesh to predict on; None: this process's devices.
    absent_classes: 'skip_absent' or 'count_absent' (per_image_metrics).

  Returns:
    The summary written to summary.json.

  Raises:
    UserError: for a bad workdir, checkpoint, split or output folder.
  """
  _check_arguments(num_worst, absent_classes)
  restored = restore.load(workdir, checkpoint)
  config = restored.config
  split, data = _load_split(config, split, data_dir)
  workdir = os.path.abspath(workdir)
  output_dir = output_dir or os.path.join(workdir, f'eval_{image_io.safe_stem(split)}')
  is_chief = jax.process_index() == 0
  if is_chief:
    image_io.make_output_dir(output_dir)
  logging.info('Evaluating %s on %s[%s]', restored.checkpoint, config.dataset, split)

  rows, worst_labels = score_split(
    restored, data, num_worst, spacing, mesh, absent_classes
  )
  summary = _summary(restored, workdir, split, rows, spacing, absent_classes)
  if is_chief:  # the reports are written once, by process 0
    summary['worst'] = split_report.write_worst(
      output_dir, data, worst_labels, rows, num_worst
    )
    split_report.write_reports(output_dir, rows, summary)
  summary['output_dir'] = output_dir
  return summary


def define_flags() -> None:
  """Defines the command's flags (only when run as a program)."""
  flags.DEFINE_string('workdir', None, 'Training workdir.')
  flags.DEFINE_string('split', None, 'Split to score; default: config.test_split.')
  flags.DEFINE_string('output_dir', None, 'Default: WORKDIR/eval_<split>.')
  flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
  flags.DEFINE_integer('num_worst', 8, 'Overlays of this many lowest-Dice images.')
  flags.DEFINE_string('spacing', None, "Pixel size 'MM' or 'ROW_MM,COL_MM' for HD95.")
  flags.DEFINE_string('data_dir', None, 'TFDS data dir, if not the one of training.')
  flags.DEFINE_string(
    'absent_classes',
    SKIP_ABSENT,
    "Per-image mean over classes: 'skip_absent' leaves out a class absent from "
    "truth and prediction; 'count_absent' scores it 1 (the paper code's rule).",
  )
  launch_flags.define()
  flags.mark_flags_as_required(['workdir'])


def main(argv) -> None:
  """Entry point of `python -m sharp_unet_jax.evaluate`."""
  del argv  # cli.run refuses positional arguments.
  distributed.initialize()
  summary = evaluate(
    FLAGS.workdir,
    split=FLAGS.split,
    output_dir=FLAGS.output_dir,
    checkpoint=FLAGS.checkpoint,
    num_worst=FLAGS.num_worst,
    spacing=parse_spacing(FLAGS.spacing),
    data_dir=FLAGS.data_dir,
    absent_classes=FLAGS.absent_classes,
  )
  if jax.process_index() != 0:
    return
  print(split_report.one_line(summary))
  print(f'Reports: {summary["output_dir"]}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)

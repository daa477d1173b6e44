"""The reports of one evaluated split: per_image.csv, summary.json, summary.md
and the panels of the lowest-Dice images (see the `evaluate` program)."""

import csv
import os

import numpy as np
from PIL import Image

from sharp_unet_jax import workdirs
from sharp_unet_jax.data import image_io, input_pipeline
from sharp_unet_jax.evaluation import per_image_metrics, visualize

SCORES = per_image_metrics.SCORE_NAMES
# Overlay panels are enlarged (nearest neighbour) to at least this height.
_MIN_PANEL_HEIGHT = 256


def worst_first(row: dict) -> tuple:
  """Sort key of a per-image row: lowest Dice, then highest HD95, then order."""
  return (row['dice'], -row['hd95'], row['index'])


def _pm(stats: dict, scale: float = 1.0, digits: int = 4) -> str:
  return f'{stats["mean"] * scale:.{digits}f} ± {stats["std"] * scale:.{digits}f}'


def _protocol_table(summary: dict) -> list[str]:
  """The paper protocol beside the per-image and pooled scores, x 100."""
  per_image, paper, pooled = (
    summary['per_image'],
    summary['paper_protocol'],
    summary['pooled'],
  )
  return [
    '## Paper protocol and this evaluation, side by side (x 100)',
    '',
    '| Protocol | Jaccard (IoU) | Dice |',
    '| --- | --- | --- |',
    f'| Paper: {paper.get("description", "threshold 0.5, per-image mean")} '
    f'| {paper["jaccard"]["mean"]:.2f} '
    f'| {paper["dice"]["mean"]:.2f} |',
    f'| Per image, mean ± std | {_pm(per_image["iou"], 100, 2)} '
    f'| {_pm(per_image["dice"], 100, 2)} |',
    f'| Dataset level (pooled over the classes present; '
    f'{pooled.get("classes_absent_from_split", 0)} absent from the split) '
    f'| {pooled["iou"] * 100:.2f} '
    f'| {pooled["dice"] * 100:.2f} |',
  ]


def _scores_table(summary: dict) -> list[str]:
  """Mean ± std over images of every score, over all classes and per class."""

  def cells(stats):
    return ' | '.join(_pm(stats[k], digits=2 if k == 'hd95' else 4) for k in SCORES)

  lines = [
    '## Per-image scores (mean ± std over images)',
    '',
    f'| Class | Dice | IoU | Precision | Recall | HD95 ({summary["hd95_unit"]}) |',
    '| --- | --- | --- | --- | --- | --- |',
    f'| mean of classes | {cells(summary["per_image"])} |',
  ]
  for name, stats in summary['per_class'].items():
    lines.append(f'| {name} | {cells(stats)} |')
  return lines


def _empty_masks_table(summary: dict) -> list[str]:
  lines = [
    '## Empty masks',
    '',
    f'Policy: {summary["empty_mask_policy"]}. Mean over classes: '
    f'{summary["absent_class_rule"]} ({summary["classes_left_out"]} left out).',
    '',
    '| Class | both empty | prediction empty | truth empty |',
    '| --- | --- | --- | --- |',
  ]
  for name, counts in summary['empty_masks'].items():
    lines.append(
      f'| {name} | {counts["both_empty"]} | {counts["pred_empty"]} '
      f'| {counts["true_empty"]} |'
    )
  return lines


def _worst_list(summary: dict) -> list[str]:
  lines = [f'## The {len(summary["worst"])} images of lowest Dice', '']
  for item in summary['worst']:
    lines.append(
      f'- `{item["file"]}`: image {item["index"]} {item["id"]}, '
      f'Dice {item["dice"]:.4f}, HD95 {item["hd95"]:.2f} {summary["hd95_unit"]}'
    )
  return lines


def markdown(summary: dict) -> str:
  """summary.md: the scores as tables."""
  sections = [
    [
      f'# Evaluation of {summary["workdir"]}',
      '',
      f'Checkpoint step {summary["step"]}, split `{summary["split"]}`, '
      f'{summary["num_images"]} images.',
    ],
    _protocol_table(summary),
    _scores_table(summary),
    _empty_masks_table(summary),
  ]
  if summary.get('worst'):
    sections.append(_worst_list(summary))
  return '\n\n'.join('\n'.join(lines) for lines in sections) + '\n'


def _enlarged_panel(data, index: int, labels: np.ndarray) -> np.ndarray:
  """Image | truth | prediction of example `index`, at least the minimum height."""
  example = data.read([index])
  panel = visualize.comparison_panels(
    input_pipeline.normalize(example['image']), example['mask'], labels[None]
  )[0]
  scale = max(1, -(-_MIN_PANEL_HEIGHT // panel.shape[0]))
  return np.repeat(np.repeat(panel, scale, axis=0), scale, axis=1)


def write_worst(output_dir, data, worst_labels, rows, num_worst: int) -> list[dict]:
  """Writes image | truth | prediction panels of the lowest-Dice images."""
  folder = os.path.join(output_dir, 'worst')
  os.makedirs(folder, exist_ok=True)
  for name in os.listdir(folder):  # Panels of an earlier run.
    if name.startswith('rank') and name.endswith('.png'):
      os.remove(os.path.join(folder, name))
  order = sorted(range(len(rows)), key=lambda i: worst_first(rows[i]))
  worst = []
  for rank, i in enumerate(order[:num_worst], start=1):
    index = rows[i]['index']
    panel = _enlarged_panel(data, index, worst_labels[index])
    stem = f'rank{rank:02d}_image{i:04d}_{rows[i]["id"]}'.rstrip('_')
    path = image_io.output_path(folder, stem, '.png')
    Image.fromarray(panel).save(path)
    worst.append(
      {
        'rank': rank,
        'index': i,
        'id': rows[i]['id'],
        'dice': rows[i]['dice'],
        'hd95': rows[i]['hd95'],
        'file': os.path.relpath(path, output_dir),
      }
    )
  return worst


def write_reports(output_dir: str, rows: list[dict], summary: dict) -> None:
  """per_image.csv, summary.json and summary.md."""
  with open(os.path.join(output_dir, 'per_image.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  workdirs.write_json_atomically(os.path.join(output_dir, 'summary.json'), summary)
  with open(os.path.join(output_dir, 'summary.md'), 'w') as f:
    f.write(markdown(summary))


def one_line(summary: dict) -> str:
  """The headline scores of an evaluated split, for the terminal."""
  paper, pooled = summary['paper_protocol'], summary['pooled']
  return (
    f'{summary["split"]} ({summary["num_images"]} images), step {summary["step"]}: '
    f'paper protocol jaccard={paper["jaccard"]["mean"]:.2f} '
    f'dice={paper["dice"]["mean"]:.2f}; pooled dice={pooled["dice"]:.4f} '
    f'iou={pooled["iou"]:.4f}; hd95={summary["per_image"]["hd95"]["mean"]:.2f} '
    f'{summary["hd95_unit"]}'
  )

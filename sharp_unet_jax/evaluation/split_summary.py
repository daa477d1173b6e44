"""The summary of a scored split: per-image and per-class statistics, pooled
scores, the paper's protocol and the empty-mask counts (summary.json)."""

import numpy as np

from sharp_unet_jax.evaluation import overlap, per_image_metrics

SCORES = per_image_metrics.SCORE_NAMES


def _stats(values) -> dict[str, float]:
  values = np.asarray(values, np.float64)
  return {
    'mean': float(values.mean()),
    'std': float(values.std()),
    'median': float(np.median(values)),
    'min': float(values.min()),
    'max': float(values.max()),
  }


def summarize(
  rows: list[dict], num_classes: int, spacing, rule=per_image_metrics.SKIP_ABSENT
) -> dict:
  """Per-image statistics, pooled scores, paper protocol and empty counts."""
  classes = range(1, max(num_classes, 2))
  pooled, present = {}, []
  for c in classes:
    inter = sum(r[f'intersection_class{c}'] for r in rows)
    pred = sum(r[f'predicted_class{c}'] for r in rows)
    true = sum(r[f'true_class{c}'] for r in rows)
    pooled[f'class{c}'] = {
      'dice': float(overlap.dice(inter, pred, true)),
      'iou': float(overlap.iou(inter, pred, true)),
    }
    if pred + true:
      present.append(f'class{c}')
  # As metrics.PooledDice: a class absent from the whole split is left out.
  kept = [pooled[name] for name in present] or list(pooled.values())
  return {
    'num_images': len(rows),
    'hd95_unit': 'mm' if spacing else 'pixels',
    'spacing': list(spacing) if spacing else None,
    'per_image': {k: _stats([r[k] for r in rows]) for k in SCORES},
    'per_class': {
      f'class{c}': {k: _stats([r[f'{k}_class{c}'] for r in rows]) for k in SCORES}
      for c in classes
    },
    'pooled': {
      'dice': float(np.mean([p['dice'] for p in kept])),
      'iou': float(np.mean([p['iou'] for p in kept])),
      'per_class': pooled,
      'classes_absent_from_split': len(pooled) - len(present),
    },
    'paper_protocol': {
      'threshold': 0.5,
      'jaccard': _stats([r['paper_jaccard'] for r in rows]),
      'dice': _stats([r['paper_dice'] for r in rows]),
    },
    'empty_masks': {
      f'class{c}': {
        case: sum(r[f'empty_case_class{c}'] == case for r in rows)
        for case in per_image_metrics.EMPTY_CASES
      }
      for c in classes
    },
    'empty_mask_policy': (
      'both empty: Dice/IoU/precision/recall 1, HD95 0; exactly one empty: '
      'Dice/IoU/precision/recall 0, HD95 = image diagonal'
    ),
    'absent_class_rule': rule,
    'classes_left_out': int(sum(r['classes_left_out'] for r in rows)),
  }

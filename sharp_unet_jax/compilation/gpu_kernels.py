"""Kernels of a compiled GPU program, from its optimised HLO, and their cost.

XLA's GPU compiler leaves, at the top level of the optimised program, one
instruction per kernel launch: fusions (XLA's own kernels), custom calls
(cuDNN convolutions, cuBLAS matrix products), copies and collectives;
parameters, tuples, get-tuple-element, bitcasts and the `-done` half of an
async pair launch nothing. For each kernel this module takes

- bytes: its operands and results at their sizes (a custom call's scratch
  workspace, its `u8[...]` result, left out), except that of an operand
  that a fusion only slices (directly, or after elementwise operations) it
  reads the distinct slices (e.g. an optimiser update reading its
  parameter's gradient out of the one all-reduced buffer), as XLA's own
  cost analysis counts, and of operands that a fusion only concatenates
  into a 1-d value it only slices (the same update over one device, where
  XLA:GPU fuses the flat gradient's concatenation into it) the parts the
  slices cover;
- FLOPs: 2 x the multiply-adds of a cuDNN convolution, read from its
  operand and result shapes and `dim_labels` (forward, input gradient and
  filter gradient alike: 2 x |forward output| x |filter| / output features),
  and 2 x M x N x K of a cuBLAS matrix product; other kernels count none;

and the step's estimate is the sum over kernels of max(FLOPs / peak FLOP/s,
bytes / bandwidth): each kernel at the chip's published peaks, one after
another. `ERRORS` says which way each figure errs.
"""

import json
import math
import re

from sharp_unet_jax.compilation import hbm_traffic, hlo_stats

# Which way each figure errs, for the JSON report and the tables.
ERRORS = {
  'flops': 'low: only convolution and matrix-product kernels are counted',
  'bytes_accessed': 'either: each operand read once in full, or the slices '
  'of one a fusion only slices or only concatenates into what it slices '
  '(high where L2 serves a re-read; low where a convolution re-reads input '
  'tiles)',
  'est_step_ms': 'low: every kernel at peak FLOP/s or bandwidth, no launch gaps',
}
_LABELS = re.compile(r'dim_labels=(\w+)_(\w+)->(\w+)')
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_BACKEND = re.compile(r'backend_config=(\{.*\})\s*$')
_CALLS = re.compile(r'calls=%([\w.\-]+)')
_SLICE_SPEC = re.compile(r'slice=\{[^}]*\}')
# A 1-d slice with stride 1: slice={[start:end]}.
_RANGE = re.compile(r'slice=\{\[(\d+):(\d+)\]\}')
# Operations that read each element of their operands where they write it.
_ELEMENTWISE = frozenset(
  {
    'abs',
    'add',
    'and',
    'clamp',
    'compare',
    'convert',
    'divide',
    'exponential',
    'is-finite',
    'log',
    'maximum',
    'minimum',
    'multiply',
    'negate',
    'not',
    'or',
    'power',
    'rsqrt',
    'select',
    'sign',
    'sqrt',
    'subtract',
    'tanh',
  }
)


def _dims(shape: str) -> list[list[int]]:
  """Dimensions of each array of a shape string, scratch (u8) excluded."""
  return [
    [int(d) for d in dims.split(',') if d]
    for dtype, dims in hlo_stats.ARRAY.findall(shape)
    if dtype in hlo_stats.BYTES and dtype != 'u8'
  ]


def _bytes(shape: str) -> int:
  return sum(hlo_stats.array_bytes(shape, skip=('u8',)))


def convolution_flops(target: str, operands: list[str], shape: str, line: str) -> float:
  """FLOPs of one cuDNN convolution custom call.

  Forward calls read (input, filter, ...) and write the output; the input
  gradient reads (output gradient, filter); the filter gradient reads
  (input, output gradient) and writes the filter. Each does 2 x |output| x
  (filter elements per output feature) FLOPs.
  """
  labels = _LABELS.search(line)
  if labels is None:
    return 0.0
  if 'BackwardFilter' in target:
    output, kernel = _dims(operands[1])[0], _dims(shape)[0]
  elif 'BackwardInput' in target:
    output, kernel = _dims(operands[0])[0], _dims(operands[1])[0]
  else:
    output, kernel = _dims(shape)[0], _dims(operands[1])[0]
  features = kernel[labels[2].index('o')]
  return 2.0 * math.prod(output) * math.prod(kernel) / features


def gemm_flops(operands: list[str], line: str) -> float:
  """FLOPs of one cuBLAS matrix product: 2 x |result| x contracted size."""
  config = _BACKEND.search(line)
  try:
    numbers = json.loads(config[1])['gemm_backend_config']['dot_dimension_numbers']
  except (TypeError, KeyError, ValueError):
    return 0.0
  lhs = _dims(operands[0])[0]
  contracted = math.prod(lhs[int(d)] for d in numbers['lhs_contracting_dimensions'])
  batch = math.prod(lhs[int(d)] for d in numbers.get('lhs_batch_dimensions', []))
  rhs = _dims(operands[1])[0]
  rhs_free = math.prod(rhs) // contracted // batch
  lhs_free = math.prod(lhs) // contracted // batch
  return 2.0 * batch * lhs_free * rhs_free * contracted


def _slices_of(name: str, dims: list, body: list) -> set | None:
  """The slices {(slice spec, sliced value's dimensions, slice's element
  count)} that a fusion body (`body`, hbm_traffic.definitions) takes of its
  value `name` of dimensions `dims`, directly, through bitcasts or through
  elementwise operations, when that is all it does with the value; None
  otherwise."""
  users = [d for d in body if name in d.operands]
  if not users:
    return None
  found = set()
  for user in users:
    user_dims = _dims(user.shape)
    if user.op == 'slice':
      spec = _SLICE_SPEC.search(user.line)
      found.add((spec[0] if spec else user.name, str(dims), math.prod(user_dims[0])))
      continue
    if user.op != 'bitcast' and not (user.op in _ELEMENTWISE and user_dims == [dims]):
      return None
    inner = _slices_of(user.name, user_dims[0], body)
    if inner is None:
      return None
    found |= inner
  return found


def _ranges(slices: set) -> list[tuple[int, int]] | None:
  """The [start, end) ranges of 1-d slices (`_slices_of`); None if any
  slice is not a plain 1-d range."""
  ranges = []
  for spec, _, _ in slices:
    match = _RANGE.fullmatch(spec)
    if not match:
      return None
    ranges.append((int(match[1]), int(match[2])))
  return ranges


def _source_parameter(name: str, body: list, by_name: dict) -> str | None:
  """The fusion parameter that value `name` is, or is made of through
  bitcasts and one-operand elementwise operations (e.g. a convert), each
  value on the way used once; None otherwise. by_name: body by name."""
  while name in by_name:
    definition = by_name[name]
    if definition.op == 'parameter':
      return name
    one_operand = definition.op == 'bitcast' or definition.op in _ELEMENTWISE
    if not one_operand or len(definition.operands) != 1:
      return None
    name = definition.operands[0]
    if sum(name in d.operands for d in body) != 1:
      return None
  return None


def _concatenated_reads(body: list) -> dict:
  """{parameter: fraction of it read} for parameters that a fusion only
  concatenates (1-d, e.g. the flat gradient over one device) into a value it
  only slices: of each, it reads the part of its range the slices cover."""
  fractions = {}
  by_name = {d.name: d for d in body}
  for concat in body:
    dims = _dims(concat.shape)
    if concat.op != 'concatenate' or len(dims) != 1 or len(dims[0]) != 1:
      continue
    slices = _slices_of(concat.name, dims[0], body)
    ranges = _ranges(slices) if slices else None
    if ranges is None:
      continue
    start = 0
    for operand in concat.operands:
      size = math.prod(_dims(by_name[operand].shape)[0]) if operand in by_name else 0
      end = start + size
      covered = sum(max(0, min(end, b) - max(start, a)) for a, b in ranges)
      parameter = _source_parameter(operand, body, by_name)
      if parameter is not None and size:
        fractions[parameter] = min(1.0, covered / size)
      start = end
  return fractions


def fusion_reads(line: str, operands: list[str], bodies: dict) -> int:
  """Bytes a fusion reads: each operand in full, except one that the fusion
  only slices (directly, or after elementwise operations), of which it reads
  the distinct slices (XLA's cost analysis, too, counts only the part of an
  operand that a fusion slices), and one that it only concatenates into a
  1-d value it only slices, of which it reads the part the slices cover
  (XLA:GPU's emitter reads each output element's one source element)."""
  called = _CALLS.search(line)
  body = hbm_traffic.definitions(bodies.get(called[1], [])) if called else []
  parameters = {int(d.arguments): d.name for d in body if d.op == 'parameter'}
  concatenated = _concatenated_reads(body)
  read = 0
  for index, shape in enumerate(operands):
    full, dims = _bytes(shape), _dims(shape)
    slices = None
    if index in parameters and len(dims) == 1:
      slices = _slices_of(parameters[index], dims[0], body)
    if slices is not None:
      elements = sum(count for _, _, count in slices)
      read += min(full, full * elements // max(math.prod(dims[0]), 1))
    elif parameters.get(index) in concatenated:
      read += round(full * concatenated[parameters[index]])
    else:
      read += full
  return read


def kernels(hlo_text: str) -> list[dict]:
  """[{'name', 'kind', 'bytes', 'flops'}] of each kernel the program launches.

  kind is the custom call's target, or the opcode of other kernels.
  """
  bodies = hbm_traffic.computations(hlo_text)
  found = []
  for instruction in hbm_traffic.top_level(hlo_text):
    op, line = instruction.op, instruction.line
    if hbm_traffic.moves_nothing(op):
      continue
    kind, flops = op, 0.0
    if op == 'custom-call':
      target = _TARGET.search(line)
      kind = target[1] if target else op
      if 'cudnn$conv' in kind:
        flops = convolution_flops(kind, instruction.operands, instruction.shape, line)
      elif 'gemm' in kind or 'matmul' in kind:
        flops = gemm_flops(instruction.operands, line)
    written = _bytes(instruction.shape)
    if op == 'fusion':
      read = fusion_reads(line, instruction.operands, bodies)
    else:
      read = sum(_bytes(shape) for shape in instruction.operands)
    found.append(
      {'name': instruction.name, 'kind': kind, 'bytes': read + written, 'flops': flops}
    )
  return found


def estimate(hlo_text: str, peak_flops: float, bandwidth: float) -> dict:
  """Kernel count, bytes, FLOPs and the summed per-kernel roofline of a
  compiled GPU program (per device)."""
  found = kernels(hlo_text)
  seconds = sum(max(k['flops'] / peak_flops, k['bytes'] / bandwidth) for k in found)
  convolutions = sum(1 for k in found if 'cudnn$conv' in k['kind'])
  return {
    'kernels': len(found),
    'convolution_kernels': convolutions,
    'flops': sum(k['flops'] for k in found),
    'bytes_accessed': sum(k['bytes'] for k in found),
    'est_seconds': seconds,
  }

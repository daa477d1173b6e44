"""Counts in a compiled program's optimised HLO text.

`collectives` finds the communication ops of an SPMD program (all-reduce,
all-gather, reduce-scatter, collective-permute, all-to-all; synchronous or as
async `-start` ops), `grouped_convolutions` the convolutions with
`feature_group_count` > 1 (the Sharp block's depthwise filter: XLA
instructions on CPU and TPU, cuDNN custom calls on GPU carry the same
attribute).
"""

import collections
import math
import re

COLLECTIVES = (
  'all-reduce',
  'all-gather',
  'reduce-scatter',
  'collective-permute',
  'all-to-all',
)
BYTES = {
  'pred': 1,
  's8': 1,
  'u8': 1,
  's16': 2,
  'u16': 2,
  'f16': 2,
  'bf16': 2,
  's32': 4,
  'u32': 4,
  'f32': 4,
  's64': 8,
  'u64': 8,
  'f64': 8,
  'c64': 8,
  'c128': 16,
}
# `%name = SHAPE op(` or `%name = SHAPE op-start(`; SHAPE may be a tuple.
_INSTRUCTION = re.compile(
  r'^\s*(?:ROOT\s+)?%?[\w.\-]+ = (?P<shape>.*?) '
  rf'(?P<op>{"|".join(COLLECTIVES)})(?P<start>-start)?\(',
  re.MULTILINE,
)
ARRAY = re.compile(r'\b([a-z]+\d*)\[([\d,]*)\]')
_GROUPS = re.compile(r'feature_group_count=(\d+)')


def array_bytes(shape: str, skip: tuple = ()) -> list[int]:
  """Bytes of each array in an HLO shape string, e.g. '(f32[3,3], bf16[8])',
  but those of the element types in `skip`."""
  sizes = []
  for dtype, dims in ARRAY.findall(shape):
    if dtype in BYTES and dtype not in skip:
      count = math.prod(int(d) for d in dims.split(',') if d)
      sizes.append(count * BYTES[dtype])
  return sizes


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {'count': n, 'bytes': b}} of the program's collective ops.

  Bytes are the sizes of each op's results, per device. An async op counts
  once (its `-start`); for async ops other than all-reduce, whose result also
  holds the operand, the largest array is taken.
  """
  found = collections.defaultdict(lambda: {'count': 0, 'bytes': 0})
  for match in _INSTRUCTION.finditer(hlo_text):
    sizes = array_bytes(match['shape'])
    if match['start'] and match['op'] != 'all-reduce':
      sizes = [max(sizes, default=0)]
    found[match['op']]['count'] += 1
    found[match['op']]['bytes'] += sum(sizes)
  return dict(found)


def grouped_convolutions(hlo_text: str) -> int:
  """How many convolutions have feature_group_count > 1."""
  count = 0
  for line in hlo_text.splitlines():
    groups = _GROUPS.search(line)
    if groups and int(groups[1]) > 1 and ('convolution(' in line or 'cudnn' in line):
      count += 1
  return count

"""Bytes a compiled TPU program moves to and from HBM, from its optimised HLO.

XLA's cost analysis (`bytes accessed`) adds up the operands and results of
every top-level instruction, wherever they live. On TPU, the compiler places
some of them in on-chip memory: a layout ending in `S(1)` is in VMEM (vector
memory), `S(2)` and higher in other on-chip spaces (sync flags, scalar
memory); a layout with no `S(n)` (or `S(0)`) is in HBM. Memory-bound steps
are paced by HBM traffic, so `hbm_bytes` counts only the HBM buffers:

- every instruction of a top-level computation (the entry and anything it
  calls other than fusion bodies and reducers) is visited once;
- its operands and results are counted at their stored size: the dimensions
  padded to the layout's first tile, e.g. T(8,128) pads the minor dimension
  to 128 lanes and the next to 8 rows, times the element size;
- an async `-start` counts its operands and the result buffers that are not
  its operands; a `copy-start` or `slice-start` (a move between memory
  spaces) reads only what it writes, in its operand's space; `-done`,
  parameters, constants, tuples, get-tuple-element and bitcasts move nothing.

`all_bytes` counts the same way in every memory space: it is the analogue of
XLA's `bytes accessed` (close to it, not equal: XLA counts only the part of
an operand that a fusion slices, this counts all of it), so the two can be
compared to check the method. A loop body would be counted once; the U-Net
steps have none. Like every figure of a compile-only program, an estimate.
"""

import math
import re
from typing import NamedTuple

from sharp_unet_jax.compilation import hlo_stats

_COMPUTATION = re.compile(r'^(ENTRY )?%([\w.\-]+) \(.*\{$')
_DEFINITION = re.compile(
  r'^\s*(?:ROOT )?%(?P<name>[\w.\-]+) = (?P<shape>.*?) (?P<op>[a-z][\w\-]*)\('
)
_NESTED = re.compile(r'(?:calls|to_apply)=%([\w.\-]+)')
_ARRAY = re.compile(r'\b([a-z]+\d*)\[([\d,]*)\](\{[^}]*\})?')
_OPERAND = re.compile(r'%([\w.\-]+)')
# Async moves between memory spaces: they read only what they write.
_MOVES = frozenset({'copy-start', 'slice-start'})
_FREE = frozenset(
  {
    'parameter',
    'constant',
    'get-tuple-element',
    'tuple',
    'bitcast',
    'after-all',
    'partition-id',
    'replica-id',
    'opt-barrier',
  }
)


def _arrays(shape: str) -> list[tuple[str, int, bool]]:
  """(text, stored bytes, in HBM) of each array in an HLO shape string."""
  found = []
  for match in _ARRAY.finditer(shape):
    dtype, dims, layout = match.groups()
    if dtype not in hlo_stats.BYTES:
      continue
    sizes = [int(d) for d in dims.split(',') if d]
    layout = layout or ''
    space = re.search(r'S\((\d+)\)', layout)
    tile = re.search(r':T\(([\d,]+)\)', layout)
    order = re.match(r'\{([\d,]*)', layout)
    if tile and order and order[1]:
      minor_to_major = [int(d) for d in order[1].split(',')]
      for dim, step in zip(minor_to_major, reversed(tile[1].split(','))):
        sizes[dim] = -(-sizes[dim] // int(step)) * int(step)
    stored = math.prod(sizes) * hlo_stats.BYTES[dtype]
    found.append((match[0], stored, not space or space[1] == '0'))
  return found


def _call_arguments(line: str, start: int) -> str:
  """The text between the parenthesis at `start` and its match."""
  depth = 0
  for i in range(start, len(line)):
    depth += {'(': 1, ')': -1}.get(line[i], 0)
    if depth == 0:
      return line[start + 1 : i]
  return line[start + 1 :]


def computations(hlo_text: str) -> dict[str, list[str]]:
  """{name: its instruction lines} of every computation of the program."""
  bodies, name = {}, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      name = header[2]
      bodies[name] = []
    elif line.startswith('}'):
      name = None
    elif name is not None:
      bodies[name].append(line)
  return bodies


class Instruction(NamedTuple):
  """One instruction of a top-level computation.

  Attributes:
    name: its name, without the '%'.
    op: its opcode, e.g. 'fusion', 'custom-call', 'all-reduce-start'.
    shape: its result's shape string.
    operands: the shape strings of its operands, in order.
    line: its line of HLO text.
  """

  name: str
  op: str
  shape: str
  operands: list[str]
  line: str


def top_level(hlo_text: str) -> list[Instruction]:
  """The instructions of the program's top-level computations (the entry
  and anything it calls other than fusion bodies and reducers), in order."""
  bodies = computations(hlo_text)
  nested = set(_NESTED.findall(hlo_text))
  shapes, calls = {}, []
  for name, lines in bodies.items():
    for line in lines:
      found = _DEFINITION.match(line)
      if not found:
        continue
      shapes[found['name']] = found['shape']
      if name not in nested:
        calls.append((found, line))
  return [
    Instruction(
      found['name'],
      found['op'],
      found['shape'],
      [
        shapes.get(o, '')
        for o in _OPERAND.findall(_call_arguments(line, found.end() - 1))
      ],
      line,
    )
    for found, line in calls
  ]


class Definition(NamedTuple):
  """One instruction of a computation: its name, opcode, result shape, the
  names of its operands (without the '%') and the text between its
  parentheses (a parameter's number), and its line."""

  name: str
  op: str
  shape: str
  operands: list[str]
  arguments: str
  line: str


def definitions(lines: list[str]) -> list[Definition]:
  """The instructions of a computation's lines (e.g. a fusion body)."""
  found = []
  for line in lines:
    match = _DEFINITION.match(line)
    if match:
      arguments = _call_arguments(line, match.end() - 1)
      found.append(
        Definition(
          match['name'],
          match['op'],
          match['shape'],
          _OPERAND.findall(arguments),
          arguments,
          line,
        )
      )
  return found


def opcodes(lines: list[str]) -> set[str]:
  """The opcodes of a computation's instruction lines."""
  return {found['op'] for found in map(_DEFINITION.match, lines) if found}


def moves_nothing(op: str) -> bool:
  """Whether an instruction moves no bytes (parameters, tuples, bitcasts,
  the `-done` half of an async pair)."""
  return op in _FREE or op.endswith('-done')


def traffic(hlo_text: str) -> dict[str, int]:
  """{'hbm_bytes': ..., 'all_bytes': ...} of a compiled program's HLO text."""
  totals = {'hbm_bytes': 0, 'all_bytes': 0}
  for instruction in top_level(hlo_text):
    op = instruction.op
    if moves_nothing(op):
      continue
    operands = [a for shape in instruction.operands for a in _arrays(shape)]
    results = _arrays(instruction.shape)
    if op.endswith('-start'):
      texts = [text for text, _, _ in operands]
      results = [r for r in results if r[0] not in texts or texts.remove(r[0])]
      results = [r for r in results if r[1] > 4]  # not the sync flag
    if op in _MOVES and operands:
      # Reads what it writes, from where the operand is.
      operands = [(text, stored, operands[0][2]) for text, stored, _ in results]
    for _, stored, in_hbm in operands + results:
      totals['all_bytes'] += stored
      totals['hbm_bytes'] += stored if in_hbm else 0
  return totals

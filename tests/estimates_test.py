"""The arithmetic behind aot's estimates and its report, on hand-made input:
the roofline, the GPU kernels of an optimised-HLO excerpt, and a backend
without memory analysis."""

import pytest

from sharp_unet_jax import aot
from sharp_unet_jax.compilation import chips, compile_reports, gpu_kernels
from sharp_unet_jax.training import aot_steps

CHIP = chips.Chip('fake', 'Fake', {'float32': 1e12, 'bfloat16': 4e12}, 2**30, 1e11, '')

# An optimised GPU program: a kernel transposing the filter, a forward
# convolution (2x8x8x4 output, 3x3x3 filter per output feature), its filter
# and input gradients, a cuBLAS product, an async all-reduce and a kernel
# slicing 4 values out of the all-reduced buffer.
HLO = """
%fused_transpose (p: f32[3,3,3,4]) -> f32[4,3,3,3] {
  %p = f32[3,3,3,4]{3,2,1,0} parameter(0)
  ROOT %t = f32[4,3,3,3]{3,2,1,0} transpose(%p), dimensions={3,0,1,2}
}

%fused_slice (q: f32[2,8,8,4]) -> f32[4] {
  %q = f32[2,8,8,4]{3,2,1,0} parameter(0)
  %s = f32[1,1,1,4]{3,2,1,0} slice(%q), slice={[0:1], [0:1], [0:1], [0:4]}
  ROOT %r = f32[4]{0} bitcast(%s)
}

ENTRY %main (x: f32[2,8,8,3], k: f32[3,3,3,4], dy: f32[2,8,8,4], a: f32[16,32], \
b: f32[32,8]) -> f32[4] {
  %x = f32[2,8,8,3]{3,2,1,0} parameter(0)
  %k = f32[3,3,3,4]{3,2,1,0} parameter(1)
  %dy = f32[2,8,8,4]{3,2,1,0} parameter(2)
  %a = f32[16,32]{1,0} parameter(3)
  %b = f32[32,8]{1,0} parameter(4)
  %kt = f32[4,3,3,3]{3,2,1,0} fusion(%k), kind=kLoop, calls=%fused_transpose
  %fwd = (f32[2,8,8,4]{3,2,1,0}, u8[1024]{0}) custom-call(%x, %kt), \
window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, \
custom_call_target="__cudnn$convForward"
  %dk = (f32[4,3,3,3]{3,2,1,0}, u8[0]{0}) custom-call(%x, %dy), \
window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, \
custom_call_target="__cudnn$convBackwardFilter"
  %dx = (f32[2,8,8,3]{3,2,1,0}, u8[0]{0}) custom-call(%dy, %kt), \
window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, \
custom_call_target="__cudnn$convBackwardInput"
  %y = f32[2,8,8,4]{3,2,1,0} get-tuple-element(%fwd), index=0
  %ab = (f32[16,8]{1,0}, s8[0]{0}) custom-call(%a, %b), \
custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":\
{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],\
"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],\
"rhs_batch_dimensions":[]}}}
  %ar = f32[2,8,8,4]{3,2,1,0} all-reduce-start(%y), replica_groups={}
  %done = f32[2,8,8,4]{3,2,1,0} all-reduce-done(%ar)
  ROOT %sl = f32[4]{0} fusion(%done), kind=kLoop, calls=%fused_slice
}
""".replace('\\\n', '')


# Fusions reading the all-reduced buffer u (32 values) and a vector v:
# `update` takes one slice of u, directly and after squaring it (the same
# 4 values), and all of v; `mixed` slices u but also reduces all of it.
SLICING_HLO = """
%fused_update (u: f32[32], v: f32[4]) -> f32[4] {
  %u = f32[32]{0} parameter(0)
  %v = f32[4]{0} parameter(1)
  %uu = f32[32]{0} multiply(%u, %u)
  %s1 = f32[4]{0} slice(%u), slice={[8:12]}
  %s2 = f32[4]{0} slice(%uu), slice={[8:12]}
  %b = f32[2,2]{1,0} bitcast(%s2)
  %c = f32[4]{0} bitcast(%b)
  %a = f32[4]{0} add(%s1, %c)
  ROOT %r = f32[4]{0} add(%a, %v)
}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %z = f32[] add(%x, %y)
}

%fused_mixed (w: f32[32]) -> f32[4] {
  %w = f32[32]{0} parameter(0)
  %s = f32[4]{0} slice(%w), slice={[0:4]}
  %zero = f32[] constant(0)
  %total = f32[] reduce(%w, %zero), dimensions={0}, to_apply=%add
  %t = f32[4]{0} broadcast(%total), dimensions={}
  ROOT %m = f32[4]{0} multiply(%s, %t)
}

ENTRY %main (p: f32[32], v: f32[4]) -> (f32[4], f32[4]) {
  %p = f32[32]{0} parameter(0)
  %v = f32[4]{0} parameter(1)
  %update = f32[4]{0} fusion(%p, %v), kind=kLoop, calls=%fused_update
  %mixed = f32[4]{0} fusion(%p), kind=kLoop, calls=%fused_mixed
  ROOT %out = (f32[4]{0}, f32[4]{0}) tuple(%update, %mixed)
}
"""


def test_a_fusion_reads_only_the_slices_of_an_operand_it_only_slices():
  found = {k['name']: k for k in gpu_kernels.kernels(SLICING_HLO)}
  assert list(found) == ['update', 'mixed']
  # 4 values of u (one slice, taken twice), all 4 of v, 4 written.
  assert found['update']['bytes'] == 4 * (4 + 4 + 4)
  # The reduce reads all 32 values of w.
  assert found['mixed']['bytes'] == 4 * (32 + 4)


# An optimiser update over one device (XLA:GPU, the flat gradient sum): the
# fusion concatenates every gradient (a, b as bitcast from 2x3, c as a
# convert of bf16) and updates the parameters of its slices only.
CONCATENATING_HLO = """
%fused_concat (a: f32[4], b: f32[2,3], c: bf16[5], q: f32[6]) -> f32[6] {
  %a = f32[4]{0} parameter(0)
  %b = f32[2,3]{1,0} parameter(1)
  %c = bf16[5]{0} parameter(2)
  %q = f32[6]{0} parameter(3)
  %bb = f32[6]{0} bitcast(%b)
  %cc = f32[5]{0} convert(%c)
  %flat = f32[15]{0} concatenate(%a, %bb, %cc), dimensions={0}
  %squared = f32[15]{0} multiply(%flat, %flat)
  %g = f32[6]{0} slice(%squared), slice={[4:10]}
  ROOT %u = f32[6]{0} add(%g, %q)
}

%fused_whole (a: f32[4], b: f32[6]) -> f32[] {
  %a = f32[4]{0} parameter(0)
  %b = f32[6]{0} parameter(1)
  %flat = f32[10]{0} concatenate(%a, %b), dimensions={0}
  %zero = f32[] constant(0)
  ROOT %total = f32[] reduce(%flat, %zero), dimensions={0}, to_apply=%add
}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %z = f32[] add(%x, %y)
}

ENTRY %main (a:f32[4], b:f32[2,3], c:bf16[5], q:f32[6], d:f32[6]) -> (f32[6], f32[]) {
  %a = f32[4]{0} parameter(0)
  %b = f32[2,3]{1,0} parameter(1)
  %c = bf16[5]{0} parameter(2)
  %q = f32[6]{0} parameter(3)
  %d = f32[6]{0} parameter(4)
  %update = f32[6]{0} fusion(%a, %b, %c, %q), kind=kLoop, calls=%fused_concat
  %whole = f32[] fusion(%a, %d), kind=kInput, calls=%fused_whole
  ROOT %t = (f32[6]{0}, f32[]) tuple(%update, %whole)
}
"""


def test_a_fusion_reads_of_what_it_concatenates_only_what_its_slices_cover():
  found = {k['name']: k for k in gpu_kernels.kernels(CONCATENATING_HLO)}
  # The slice [4:10] covers all of b and none of a or c; q in full, 6 written.
  assert found['update']['bytes'] == 4 * 6 + 4 * 6 + 4 * 6
  # A fusion that reduces the whole concatenation reads all of it.
  assert found['whole']['bytes'] == 4 * (4 + 6) + 4


def test_roofline_is_the_slower_of_compute_and_memory():
  compute_bound = {'flops': 3e12, 'bytes_accessed': 1e11}  # 3 s vs 1 s
  est = compile_reports.roofline(compute_bound, CHIP, 'float32', 6)
  assert est['est_step_ms'] == pytest.approx(3000.0)
  assert est['est_images_per_sec_per_device'] == pytest.approx(2.0)
  # bfloat16's peak is 4x: 0.75 s of compute, 1 s of memory traffic.
  est = compile_reports.roofline(compute_bound, CHIP, 'bfloat16', 6)
  assert est['est_step_ms'] == pytest.approx(1000.0)
  assert compile_reports.roofline({'flops': None}, CHIP, 'float32', 6) == {
    'est_step_ms': None,
    'est_images_per_sec_per_device': None,
  }


def test_gpu_kernels_count_bytes_and_convolution_flops():
  found = {k['name']: k for k in gpu_kernels.kernels(HLO)}
  # Parameters, get-tuple-element and the -done half launch nothing.
  assert list(found) == ['kt', 'fwd', 'dk', 'dx', 'ab', 'ar', 'sl']
  assert found['fwd']['kind'] == '__cudnn$convForward'
  macs = 2 * 8 * 8 * 4 * (3 * 3 * 3)  # output elements x filter taps x inputs
  for name in ('fwd', 'dk', 'dx'):
    assert found[name]['flops'] == 2 * macs
  assert found['ab']['flops'] == 2 * 16 * 8 * 32
  assert found['kt']['flops'] == 0
  # Operands and results at their sizes; the u8 scratch is not counted.
  x, k, y = 2 * 8 * 8 * 3 * 4, 3 * 3 * 3 * 4 * 4, 2 * 8 * 8 * 4 * 4
  assert found['kt']['bytes'] == 2 * k
  assert found['fwd']['bytes'] == x + k + y
  assert found['dk']['bytes'] == x + y + k
  assert found['ar']['bytes'] == 2 * y  # reads and writes the buffer
  assert found['sl']['bytes'] == 2 * 4 * 4  # reads only the 4 values it cuts
  est = gpu_kernels.estimate(HLO, peak_flops=1e9, bandwidth=1e9)
  assert est['kernels'] == 7 and est['convolution_kernels'] == 3
  assert est['flops'] == 6 * macs + 2 * 16 * 8 * 32
  # Per kernel, the slower of compute and memory, summed.
  expected = sum(max(k['flops'] / 1e9, k['bytes'] / 1e9) for k in found.values())
  assert est['est_seconds'] == pytest.approx(expected)


class NoMemoryAnalysis:
  """A compiled program whose backend gives no memory analysis."""

  def memory_analysis(self):
    return None


def test_a_missing_memory_analysis_gives_a_clear_line():
  report = compile_reports.memory(NoMemoryAnalysis())
  assert report == dict.fromkeys(compile_reports.MEMORY_FIELDS)
  report.update(
    compiled=True,
    compile_s=1.0,
    device_memory_bytes=None,
    flops=None,
    bytes_accessed=None,
    cost_source=None,
    collectives={},
    grouped_convolutions=0,
    est_step_ms=None,
    est_images_per_sec_per_device=None,
  )
  text = aot.describe('train', report)
  assert 'memory not reported by this backend' in text
  aot_steps.check_fits({'train': report})  # nothing to compare: no error


def test_gpus_have_80_gib():
  for name in ('h100', 'a100'):
    assert chips.CHIPS[name].memory_bytes == 80 * 2**30
  report = {'argument_bytes': 0, 'output_bytes': 0, 'temp_bytes': 0}
  report.update(peak_bytes=2**30, device_memory_bytes=chips.CHIPS['h100'].memory_bytes)
  assert 'of 80.000 GiB' in aot._memory_line(report)  # noqa: SLF001

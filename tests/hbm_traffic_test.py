"""HBM-only bytes of a TPU program's HLO text (hbm_traffic.py)."""

from sharp_unet_jax.compilation import hbm_traffic

# A hand-written optimised-HLO excerpt: one fusion reading an HBM parameter
# and writing VMEM (S(1)), an async copy from HBM to VMEM, and the fusion's
# body, which is not top level.
HLO = """
%fused_computation (param_0: f32[8,128]) -> f32[8,128] {
  %param_0 = f32[8,128]{1,0:T(8,128)} parameter(0)
  ROOT %negate.1 = f32[8,128]{1,0:T(8,128)} negate(%param_0)
}

ENTRY %main (p0: f32[8,128], p1: bf16[4,3]) -> f32[8,128] {
  %p0 = f32[8,128]{1,0:T(8,128)} parameter(0)
  %p1 = bf16[4,3]{1,0:T(4,128)(2,1)} parameter(1)
  %fusion = f32[8,128]{1,0:T(8,128)S(1)} fusion(%p0), calls=%fused_computation
  %copy-start = (bf16[4,3]{1,0:T(4,128)(2,1)S(1)}, bf16[4,3]{1,0:T(4,128)(2,1)}, \
u32[]{:S(2)}) copy-start(%p1)
  %copy-done = bf16[4,3]{1,0:T(4,128)(2,1)S(1)} copy-done(%copy-start)
  ROOT %add = f32[8,128]{1,0:T(8,128)} add(%fusion, %fusion)
}
"""


def test_only_hbm_buffers_count_at_their_padded_size():
  counts = hbm_traffic.traffic(HLO)
  tile = 8 * 128 * 4
  # bf16[4,3] is stored as a padded (4, 128) tile: 1 KiB.
  copy = 4 * 128 * 2
  # HBM: the fusion reads p0, the copy reads p1, the add writes its result.
  assert counts['hbm_bytes'] == tile + copy + tile
  # Everywhere: + the fusion's VMEM result, the copy's VMEM write, and the
  # add's two VMEM reads; the fusion body is not counted again.
  assert counts['all_bytes'] == 2 * tile + 2 * copy + 3 * tile


def test_stored_sizes_follow_the_first_tile():
  ((_, stored, in_hbm),) = hbm_traffic._arrays('f32[3,200]{1,0:T(8,128)}')  # noqa: SLF001
  assert stored == 8 * 256 * 4 and in_hbm
  ((_, stored, in_hbm),) = hbm_traffic._arrays('f32[3,200]{0,1:T(8,128)S(1)}')  # noqa: SLF001
  assert stored == 128 * 200 * 4 and not in_hbm

"""Published figures of the accelerators `aot` compiles for.

Two tables, both from vendors' published specifications (sources in each
entry):

- `CHIPS`: per chip (one JAX device), peak dense FLOP/s by compute dtype,
  memory and memory bandwidth. `aot` divides a step's FLOPs and bytes by them
  for a roofline estimate of its time.
- `GPU_PROPERTIES`: the device properties XLA's GPU compiler needs in place of
  an attached GPU, written into a `GpuTargetConfigProto` (text format) by
  `gpu_target_config`. jax 0.10.2's CUDA plugin accepts it as
  `jax.experimental.topologies.get_topology_desc(platform='cuda',
  topology='1x1xN', target_config=TEXT)`; XLA then compiles, without a GPU,
  what it would compile on one, except autotuning (it takes default
  algorithms).

float32 peaks are those the compilers use by default: XLA on TPU runs float32
matmuls and convolutions in bfloat16 passes at the default precision, and on
NVIDIA Ampere and later JAX's default precision lets cuDNN and cuBLAS use
TF32 tensor cores, so both are listed at those rates.
"""

import dataclasses

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator as a JAX device.

  Attributes:
    name: a short name, as in --target.
    device_kind: the name its JAX devices report.
    peak_flops: dense FLOP/s by compute dtype ('float32', 'bfloat16').
    memory_bytes: device memory (HBM).
    bandwidth: memory bandwidth, bytes per second.
    source: where the figures come from.
  """

  name: str
  device_kind: str
  peak_flops: dict
  memory_bytes: int
  bandwidth: float
  source: str


CHIPS = {
  # libtpu's compile-only v4 topologies have one device per TensorCore (8
  # for v4:2x2x1), not one megacore device per chip as a v4 VM runs: half
  # of a chip's figures per device.
  'v4': Chip(
    'v4',
    'TPU v4',
    {'float32': 137.5e12, 'bfloat16': 137.5e12},
    16 * GIB,
    600e9,
    'cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 32 GiB HBM2, 1,200 GB/s '
    'per chip of two TensorCores; halved per TensorCore device',
  ),
  'v5e': Chip(
    'v5e',
    'TPU v5 lite',
    {'float32': 197e12, 'bfloat16': 197e12},
    16 * GIB,
    819e9,
    'cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GiB HBM2, 819 GB/s',
  ),
  'v5p': Chip(
    'v5p',
    'TPU v5',
    {'float32': 459e12, 'bfloat16': 459e12},
    95 * GIB,
    2765e9,
    'cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GiB HBM2e, 2,765 GB/s',
  ),
  'v6e': Chip(
    'v6e',
    'TPU v6 lite',
    {'float32': 918e12, 'bfloat16': 918e12},
    32 * GIB,
    1640e9,
    'cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 32 GiB HBM, 1,640 GB/s',
  ),
  'h100': Chip(
    'h100',
    'NVIDIA H100 80GB HBM3',
    {'float32': 494.7e12, 'bfloat16': 989.4e12},
    80 * GIB,
    3.35e12,
    'NVIDIA H100 datasheet, SXM5: TF32 494.7 / BF16 989.4 dense TFLOP/s, '
    '80 GB HBM3 (80 GiB), 3.35 TB/s',
  ),
  'h200': Chip(
    'h200',
    'NVIDIA H200',
    {'float32': 494.7e12, 'bfloat16': 989.4e12},
    143771 * 2**20,
    4.8e12,
    'NVIDIA H200 datasheet, SXM: the H100 SXM5 rates (TF32 494.7 / BF16 989.4 '
    'dense TFLOP/s), 141 GB HBM3e, 4.8 TB/s; memory as nvidia-smi reads it '
    '(143,771 MiB) on the H200 the device check ran on',
  ),
  'a100': Chip(
    'a100',
    'NVIDIA A100-SXM4-80GB',
    {'float32': 156e12, 'bfloat16': 312e12},
    80 * GIB,
    2.039e12,
    'NVIDIA A100 datasheet, SXM4 80GB: TF32 156 / BF16 312 dense TFLOP/s, '
    '80 GB HBM2e (80 GiB), 2,039 GB/s',
  ),
}


# Device properties of the GPUs, for XLA's GpuTargetConfigProto. Sources: the
# CUDA C++ Programming Guide, "Compute Capabilities" (per-SM and per-block
# limits of compute capability 9.0 and 8.0: 2,048 threads, 64 K registers,
# 228 KB / 164 KB shared memory per SM, of which 227 KB / 163 KB per block),
# and NVIDIA's H100 and A100 whitepapers and datasheets (SM count, FP32 cores
# per SM, L2 size, boost clock, memory size and bandwidth).
def _gpu_properties(
  capability: tuple, sms: int, fp32_per_sm: int, smem_kb: int, l2_mb: int, ghz: float
) -> dict:
  """One GPU's properties; CUDA keeps 1 KB of an SM's shared memory for
  itself, so a block may opt in to all but 1 KB of it."""
  return {
    'compute_capability': capability,
    'core_count': sms,
    'fpus_per_core': fp32_per_sm,
    'shared_memory_per_core': smem_kb * 1024,
    'shared_memory_per_block_optin': (smem_kb - 1) * 1024,
    'l2_cache_size': l2_mb * 2**20,
    'clock_rate_ghz': ghz,
  }


GPU_PROPERTIES = {
  'h100': _gpu_properties((9, 0), 132, 128, 228, 50, 1.98),
  # The H100 SXM5's processor; 60 MB of L2 as PyTorch reads it on an H200.
  'h200': _gpu_properties((9, 0), 132, 128, 228, 60, 1.98),
  'a100': _gpu_properties((8, 0), 108, 64, 164, 40, 1.41),
}
# cuDNN that jax-cuda12-plugin 0.10.2 requires (nvidia-cudnn-cu12>=9.8).
CUDNN_VERSION = (9, 8)


def gpu_target_config(name: str) -> str:
  """The GpuTargetConfigProto, in text format, of GPU `name` ('h100', 'h200',
  'a100')."""
  chip, props = CHIPS[name], GPU_PROPERTIES[name]
  major, minor = props['compute_capability']
  fields = {
    'threads_per_block_limit': 1024,
    'threads_per_warp': 32,
    'shared_memory_per_block': 48 * 1024,
    'shared_memory_per_core': props['shared_memory_per_core'],
    'threads_per_core_limit': 2048,
    'core_count': props['core_count'],
    'fpus_per_core': props['fpus_per_core'],
    'block_dim_limit_x': 2**31 - 1,
    'block_dim_limit_y': 65535,
    'block_dim_limit_z': 65535,
    'memory_bandwidth': int(chip.bandwidth),
    'l2_cache_size': props['l2_cache_size'],
    'clock_rate_ghz': props['clock_rate_ghz'],
    'device_memory_size': chip.memory_bytes,
    'shared_memory_per_block_optin': props['shared_memory_per_block_optin'],
    'registers_per_core_limit': 65536,
    'registers_per_block_limit': 65536,
  }
  info = '\n'.join(f'  {key}: {value}' for key, value in fields.items())
  return (
    f'gpu_device_info {{\n{info}\n'
    f'  cuda_compute_capability {{ major: {major} minor: {minor} }}\n}}\n'
    'platform_name: "CUDA"\n'
    f'dnn_version_info {{ major: {CUDNN_VERSION[0]} minor: {CUDNN_VERSION[1]} }}\n'
    f'device_description_str: "{chip.device_kind}"\n'
  )

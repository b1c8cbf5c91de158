// Multi-scale deformable attention on CUDA: kernels and their launchers.
//
// Sampling follows grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False): a
// normalised location (x, y) of a level of size h x w reads the pixel coordinate
// (x * w - 0.5, y * h - 0.5), interpolating the four surrounding pixels, those outside the map
// counting as zero. Arithmetic runs in at::opmath_type<scalar_t> (float32 for half types).
//
// Forward: one thread per output element (n, q, m, d); consecutive threads read consecutive
// channels of a pixel, so value loads are coalesced.
// Backward: one warp per (n, q, m); its lanes split the D channels, scatter into grad_value with
// atomicAdd, and reduce the per-point gradients of the locations and weights with warp shuffles,
// so every (n, q, m, l, p) gradient is written once, by lane 0, without atomics.
#include "ms_deform_attn.h"

#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace bifit {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int kWarpSize = 32;
constexpr int64_t kMaxBlocks = 1 << 16;

struct ProblemSizes {
  int64_t batch;     // N
  int64_t spatial;   // S, pixels of all levels
  int64_t heads;     // M
  int64_t channels;  // D, per head
  int64_t queries;   // Lq
  int64_t levels;    // L
  int64_t points;    // P, per level
};

ProblemSizes problem_sizes(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0),
          value.size(1),
          value.size(2),
          value.size(3),
          sampling_locations.size(1),
          sampling_locations.size(3),
          sampling_locations.size(4)};
}

unsigned int blocks_for(int64_t threads) {
  return static_cast<unsigned int>(
      std::min((threads + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks));
}

// Whether any of the four pixels around (x, y) lies inside the h x w map. Points exactly one
// pixel left of / above the map still matter: their interpolation weight is zero there, but not
// their gradient. NaN coordinates fail every comparison and read nothing.
template <typename acc_t>
__device__ __forceinline__ bool touches_map(acc_t x, acc_t y, int64_t h, int64_t w) {
  return x >= acc_t(-1) && y >= acc_t(-1) && x < static_cast<acc_t>(w) &&
         y < static_cast<acc_t>(h);
}

// The four pixels around a pixel coordinate, in the order (left, top), (right, top),
// (left, bottom), (right, bottom): their index in the level (row-major, -1 outside the map) and
// their bilinear weight; dx, dy are the offsets of the point from the top-left pixel.
template <typename acc_t>
struct BilinearCorners {
  int64_t pixel[4];
  acc_t weight[4];
  acc_t dx;
  acc_t dy;
};

template <typename acc_t>
__device__ __forceinline__ BilinearCorners<acc_t> bilinear_corners(acc_t x, acc_t y, int64_t h,
                                                                   int64_t w) {
  BilinearCorners<acc_t> corners;
  const acc_t left = floor(x);
  const acc_t top = floor(y);
  corners.dx = x - left;
  corners.dy = y - top;
  const int64_t column = static_cast<int64_t>(left);
  const int64_t row = static_cast<int64_t>(top);
#pragma unroll
  for (int corner = 0; corner < 4; ++corner) {
    const int64_t corner_column = column + (corner & 1);
    const int64_t corner_row = row + (corner >> 1);
    const bool inside = corner_column >= 0 && corner_column < w && corner_row >= 0 && corner_row < h;
    corners.pixel[corner] = inside ? corner_row * w + corner_column : -1;
  }
  corners.weight[0] = (acc_t(1) - corners.dx) * (acc_t(1) - corners.dy);
  corners.weight[1] = corners.dx * (acc_t(1) - corners.dy);
  corners.weight[2] = (acc_t(1) - corners.dx) * corners.dy;
  corners.weight[3] = corners.dx * corners.dy;
  return corners;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t partial) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    partial += __shfl_down_sync(0xffffffffu, partial, offset);
  }
  return partial;
}

template <typename scalar_t, typename acc_t>
__global__ void ms_deform_attn_forward_kernel(const scalar_t* __restrict__ value,
                                              const int64_t* __restrict__ spatial_shapes,
                                              const int64_t* __restrict__ level_start_index,
                                              const acc_t* __restrict__ sampling_locations,
                                              const acc_t* __restrict__ attention_weights,
                                              scalar_t* __restrict__ output,
                                              const ProblemSizes sizes) {
  const int64_t pixel_stride = sizes.heads * sizes.channels;
  const int64_t elements = sizes.batch * sizes.queries * pixel_stride;
  const int64_t grid_threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t element = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       element < elements; element += grid_threads) {
    const int64_t channel = element % sizes.channels;
    const int64_t head_query = element / sizes.channels;  // (n, q, m) flattened
    const int64_t head = head_query % sizes.heads;
    const int64_t batch = head_query / (sizes.heads * sizes.queries);
    const scalar_t* value_channel =
        value + batch * sizes.spatial * pixel_stride + head * sizes.channels + channel;
    const int64_t first_sample = head_query * sizes.levels * sizes.points;

    acc_t sum = 0;
    for (int64_t level = 0; level < sizes.levels; ++level) {
      const int64_t h = spatial_shapes[2 * level];
      const int64_t w = spatial_shapes[2 * level + 1];
      const scalar_t* level_value = value_channel + level_start_index[level] * pixel_stride;
      for (int64_t point = 0; point < sizes.points; ++point) {
        const int64_t sample = first_sample + level * sizes.points + point;
        const acc_t x = sampling_locations[2 * sample] * static_cast<acc_t>(w) - acc_t(0.5);
        const acc_t y = sampling_locations[2 * sample + 1] * static_cast<acc_t>(h) - acc_t(0.5);
        if (!touches_map(x, y, h, w)) {
          continue;
        }
        const BilinearCorners<acc_t> corners = bilinear_corners(x, y, h, w);
        acc_t sampled = 0;
#pragma unroll
        for (int corner = 0; corner < 4; ++corner) {
          if (corners.pixel[corner] >= 0) {
            sampled += corners.weight[corner] *
                       static_cast<acc_t>(level_value[corners.pixel[corner] * pixel_stride]);
          }
        }
        sum += attention_weights[sample] * sampled;
      }
    }
    output[element] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void ms_deform_attn_backward_kernel(const scalar_t* __restrict__ value,
                                               const int64_t* __restrict__ spatial_shapes,
                                               const int64_t* __restrict__ level_start_index,
                                               const acc_t* __restrict__ sampling_locations,
                                               const acc_t* __restrict__ attention_weights,
                                               const scalar_t* __restrict__ grad_output,
                                               acc_t* __restrict__ grad_value,
                                               acc_t* __restrict__ grad_sampling_locations,
                                               acc_t* __restrict__ grad_attention_weights,
                                               const ProblemSizes sizes) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t pixel_stride = sizes.heads * sizes.channels;
  const int64_t head_queries = sizes.batch * sizes.queries * sizes.heads;
  const int64_t grid_warps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  // Every lane of a warp holds the same head_query, so the loops and the branch on touches_map
  // below are uniform across the warp, as the full-mask shuffles of warp_sum require.
  for (int64_t head_query = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
       head_query < head_queries; head_query += grid_warps) {
    const int64_t head = head_query % sizes.heads;
    const int64_t batch = head_query / (sizes.heads * sizes.queries);
    const int64_t head_offset = batch * sizes.spatial * pixel_stride + head * sizes.channels;
    const scalar_t* grad_output_row = grad_output + head_query * sizes.channels;
    const int64_t first_sample = head_query * sizes.levels * sizes.points;

    for (int64_t level = 0; level < sizes.levels; ++level) {
      const int64_t h = spatial_shapes[2 * level];
      const int64_t w = spatial_shapes[2 * level + 1];
      const int64_t level_offset = head_offset + level_start_index[level] * pixel_stride;
      const scalar_t* level_value = value + level_offset;
      acc_t* level_grad_value = grad_value + level_offset;
      for (int64_t point = 0; point < sizes.points; ++point) {
        const int64_t sample = first_sample + level * sizes.points + point;
        const acc_t x = sampling_locations[2 * sample] * static_cast<acc_t>(w) - acc_t(0.5);
        const acc_t y = sampling_locations[2 * sample + 1] * static_cast<acc_t>(h) - acc_t(0.5);
        const acc_t attention = attention_weights[sample];
        // Partial sums over this lane's channels of d(loss)/d(attention weight) and of
        // d(loss)/d(pixel x, y) divided by the attention weight.
        acc_t grad_attention = 0;
        acc_t grad_x = 0;
        acc_t grad_y = 0;
        if (touches_map(x, y, h, w)) {
          const BilinearCorners<acc_t> corners = bilinear_corners(x, y, h, w);
          for (int64_t channel = lane; channel < sizes.channels; channel += kWarpSize) {
            const acc_t grad = static_cast<acc_t>(grad_output_row[channel]);
            acc_t corner_value[4];
#pragma unroll
            for (int corner = 0; corner < 4; ++corner) {
              const int64_t pixel = corners.pixel[corner];
              corner_value[corner] =
                  pixel >= 0 ? static_cast<acc_t>(level_value[pixel * pixel_stride + channel])
                             : acc_t(0);
              if (pixel >= 0) {
                atomicAdd(level_grad_value + pixel * pixel_stride + channel,
                          attention * corners.weight[corner] * grad);
              }
            }
            const acc_t sampled =
                corners.weight[0] * corner_value[0] + corners.weight[1] * corner_value[1] +
                corners.weight[2] * corner_value[2] + corners.weight[3] * corner_value[3];
            grad_attention += grad * sampled;
            grad_x += grad * ((acc_t(1) - corners.dy) * (corner_value[1] - corner_value[0]) +
                              corners.dy * (corner_value[3] - corner_value[2]));
            grad_y += grad * ((acc_t(1) - corners.dx) * (corner_value[2] - corner_value[0]) +
                              corners.dx * (corner_value[3] - corner_value[1]));
          }
        }
        grad_attention = warp_sum(grad_attention);
        grad_x = warp_sum(grad_x);
        grad_y = warp_sum(grad_y);
        if (lane == 0) {
          grad_attention_weights[sample] = grad_attention;
          grad_sampling_locations[2 * sample] = grad_x * attention * static_cast<acc_t>(w);
          grad_sampling_locations[2 * sample + 1] = grad_y * attention * static_cast<acc_t>(h);
        }
      }
    }
  }
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const ProblemSizes sizes = problem_sizes(value, sampling_locations);
  at::Tensor output =
      at::empty({sizes.batch, sizes.queries, sizes.heads * sizes.channels}, value.options());
  if (output.numel() == 0) {
    return output;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        ms_deform_attn_forward_kernel<scalar_t, acc_t>
            <<<blocks_for(output.numel()), kThreadsPerBlock, 0, stream>>>(
                value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
                level_start_index.const_data_ptr<int64_t>(),
                sampling_locations.const_data_ptr<acc_t>(),
                attention_weights.const_data_ptr<acc_t>(), output.mutable_data_ptr<scalar_t>(),
                sizes);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value,
                                                     const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_locations,
                                                     const at::Tensor& attention_weights,
                                                     const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const ProblemSizes sizes = problem_sizes(value, sampling_locations);
  // Accumulated in the arithmetic type: atomicAdd on half types would lose most of the sum.
  at::Tensor grad_value =
      at::zeros(value.sizes(), value.options().dtype(at::toOpMathType(value.scalar_type())));
  at::Tensor grad_sampling_locations = at::empty_like(sampling_locations);
  at::Tensor grad_attention_weights = at::empty_like(attention_weights);
  const int64_t head_queries = sizes.batch * sizes.queries * sizes.heads;
  if (head_queries > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          ms_deform_attn_backward_kernel<scalar_t, acc_t>
              <<<blocks_for(head_queries * kWarpSize), kThreadsPerBlock, 0, stream>>>(
                  value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
                  level_start_index.const_data_ptr<int64_t>(),
                  sampling_locations.const_data_ptr<acc_t>(),
                  attention_weights.const_data_ptr<acc_t>(),
                  grad_output.const_data_ptr<scalar_t>(), grad_value.mutable_data_ptr<acc_t>(),
                  grad_sampling_locations.mutable_data_ptr<acc_t>(),
                  grad_attention_weights.mutable_data_ptr<acc_t>(), sizes);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return {grad_value.to(value.scalar_type()), grad_sampling_locations, grad_attention_weights};
}

}  // namespace bifit

// Multi-scale deformable attention on CUDA: launchers of the forward and backward kernels.
//
// The launchers expect inputs validated by the bindings (ms_deform_attn.cpp): contiguous CUDA
// tensors on one device, value in float32/float64/float16/bfloat16, spatial_shapes and
// level_start_index in int64, sampling_locations and attention_weights in the accumulation type
// of value (float64 for float64 value, float32 otherwise).
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

namespace bifit {

// value [N, S, M, D], spatial_shapes [L, 2] (h, w), level_start_index [L],
// sampling_locations [N, Lq, M, L, P, 2] (x, y in [0, 1]), attention_weights [N, Lq, M, L, P]
// -> output [N, Lq, M * D] in the dtype of value.
at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights);

// The forward inputs and grad_output [N, Lq, M * D] (dtype of value)
// -> {grad_value, grad_sampling_locations, grad_attention_weights}, each in its input's dtype.
std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value,
                                                     const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_locations,
                                                     const at::Tensor& attention_weights,
                                                     const at::Tensor& grad_output);

}  // namespace bifit

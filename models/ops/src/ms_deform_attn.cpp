// Python bindings of multi-scale deformable attention (module models.ops._C): input checks, then
// the CUDA launchers of ms_deform_attn_cuda.cu.
#include <ATen/OpMathType.h>
#include <torch/extension.h>

#include "ms_deform_attn.h"

namespace bifit {
namespace {

// On the device of value, and contiguous.
void check_device_and_layout(const at::Tensor& tensor, const char* name,
                             const at::Tensor& value) {
  TORCH_CHECK(tensor.device() == value.device(), "ms_deform_attn: ", name, " is on ",
              tensor.device(), " but value is on ", value.device());
  TORCH_CHECK(tensor.is_contiguous(), "ms_deform_attn: ", name, " must be contiguous");
}

void check_dtype(const at::Tensor& tensor, const char* name, at::ScalarType expected,
                 const char* why) {
  TORCH_CHECK(tensor.scalar_type() == expected, "ms_deform_attn: ", name, " must be ", expected,
              " (", why, "), got ", tensor.scalar_type());
}

void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                  const at::Tensor& attention_weights) {
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn: value must be a CUDA tensor, got one on ",
              value.device(), " (the PyTorch implementation handles other devices)");
  TORCH_CHECK(value.is_contiguous(), "ms_deform_attn: value must be contiguous");
  check_device_and_layout(spatial_shapes, "spatial_shapes", value);
  check_device_and_layout(level_start_index, "level_start_index", value);
  check_device_and_layout(sampling_locations, "sampling_locations", value);
  check_device_and_layout(attention_weights, "attention_weights", value);

  const at::ScalarType value_dtype = value.scalar_type();
  TORCH_CHECK(value_dtype == at::kFloat || value_dtype == at::kDouble ||
                  value_dtype == at::kHalf || value_dtype == at::kBFloat16,
              "ms_deform_attn: value must be float32, float64, float16 or bfloat16, got ",
              value_dtype);
  check_dtype(spatial_shapes, "spatial_shapes", at::kLong, "h, w per level");
  check_dtype(level_start_index, "level_start_index", at::kLong, "offset of each level in S");
  const at::ScalarType coordinate_dtype = at::toOpMathType(value_dtype);
  const char* why_coordinate_dtype =
      "float64 for float64 value, float32 for float32, float16 and bfloat16 value";
  check_dtype(sampling_locations, "sampling_locations", coordinate_dtype, why_coordinate_dtype);
  check_dtype(attention_weights, "attention_weights", coordinate_dtype, why_coordinate_dtype);

  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be [N, S, M, D], got shape ",
              value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be [L, 2], got shape ", spatial_shapes.sizes());
  const int64_t levels = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == levels,
              "ms_deform_attn: level_start_index must be [L] with L = ", levels,
              ", got shape ", level_start_index.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(0) == value.size(0) &&
                  sampling_locations.size(2) == value.size(2) &&
                  sampling_locations.size(3) == levels && sampling_locations.size(5) == 2,
              "ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2] with N = ",
              value.size(0), ", M = ", value.size(2), ", L = ", levels, ", got shape ",
              sampling_locations.sizes());
  // S is not checked against the sum of h * w over levels: that would need spatial_shapes on the
  // host, a synchronisation on every call.
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "ms_deform_attn: attention_weights must be [N, Lq, M, L, P] = ",
              sampling_locations.sizes().slice(0, 5), ", got shape ", attention_weights.sizes());
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                   const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                   const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  return ms_deform_attn_cuda_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index,
                                 const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights,
                                 const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_device_and_layout(grad_output, "grad_output", value);
  check_dtype(grad_output, "grad_output", value.scalar_type(), "the dtype of value");
  const std::vector<int64_t> output_shape = {value.size(0), sampling_locations.size(1),
                                             value.size(2) * value.size(3)};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(output_shape),
              "ms_deform_attn: grad_output must be [N, Lq, M * D] = ", at::IntArrayRef(output_shape),
              ", got shape ", grad_output.sizes());
  return ms_deform_attn_cuda_backward(value, spatial_shapes, level_start_index, sampling_locations,
                                      attention_weights, grad_output);
}

}  // namespace
}  // namespace bifit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "Multi-scale deformable attention (CUDA)";
  module.def("forward", &bifit::forward,
             "value [N, S, M, D], spatial_shapes [L, 2], level_start_index [L], "
             "sampling_locations [N, Lq, M, L, P, 2], attention_weights [N, Lq, M, L, P] "
             "-> output [N, Lq, M * D]",
             pybind11::arg("value"), pybind11::arg("spatial_shapes"),
             pybind11::arg("level_start_index"), pybind11::arg("sampling_locations"),
             pybind11::arg("attention_weights"));
  module.def("backward", &bifit::backward,
             "the forward inputs and grad_output [N, Lq, M * D] "
             "-> [grad_value, grad_sampling_locations, grad_attention_weights]",
             pybind11::arg("value"), pybind11::arg("spatial_shapes"),
             pybind11::arg("level_start_index"), pybind11::arg("sampling_locations"),
             pybind11::arg("attention_weights"), pybind11::arg("grad_output"));
}

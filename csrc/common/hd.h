// SPINERANK_HD marks math shared by the CPU and CUDA kernels: host and device
// functions from one definition, so both backends evaluate the same formulas.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SPINERANK_HD __host__ __device__ __forceinline__
#else
#define SPINERANK_HD inline
#endif

#include <cmath>

namespace spinerank {

// Whether x is finite, in host and device code alike.
SPINERANK_HD bool is_finite(double x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

}  // namespace spinerank

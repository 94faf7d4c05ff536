# cmake -DLIST="8.0 9.0+PTX" -P tests/cmake/arch_list.cmake: prints the
# CMAKE_CUDA_ARCHITECTURES that cmake/cuda_backend.cmake makes of a
# TORCH_CUDA_ARCH_LIST.
include(${CMAKE_CURRENT_LIST_DIR}/../../cmake/cuda_backend.cmake)
spinerank_arch_list_to_cmake("${LIST}" result)
message("${result}")

# The CUDA backend: which mode, which architectures, and its two targets.
# Used by CMakeLists.txt; SPINERANK_CUDA is documented there.

# The torch being built against: does it have CUDA? Asked before
# find_package(Torch), because a CUDA torch needs the CUDA language enabled
# first. The build interpreter may not see the target environment's torch (pip's
# build isolation), so torch/version.py is also looked for on CMAKE_PREFIX_PATH.
function(spinerank_torch_cuda_version out)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "import torch; print(torch.version.cuda or '')"
    OUTPUT_VARIABLE version OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE failed ERROR_QUIET)
  if(failed)
    set(version "")
    foreach(prefix IN LISTS CMAKE_PREFIX_PATH)
      foreach(candidate "${prefix}/torch/version.py" "${prefix}/../../torch/version.py")
        if(EXISTS "${candidate}")
          file(STRINGS "${candidate}" line REGEX "^cuda[^=]*=")
          string(REGEX MATCH "'([0-9.]+)'" match "${line}")
          set(version "${CMAKE_MATCH_1}")
          break()
        endif()
      endforeach()
    endforeach()
  endif()
  set(${out} "${version}" PARENT_SCOPE)
endfunction()

# Sets SPINERANK_CUDA_MODE (OFF | CHECK | ON) in the caller from SPINERANK_CUDA.
macro(spinerank_resolve_cuda_mode)
  string(TOUPPER "${SPINERANK_CUDA}" _spinerank_cuda)
  if(NOT _spinerank_cuda MATCHES "^(AUTO|OFF|CHECK|ON)$")
    message(FATAL_ERROR "SPINERANK_CUDA must be AUTO, OFF, CHECK or ON, got '${SPINERANK_CUDA}'")
  endif()
  set(SPINERANK_CUDA_MODE "${_spinerank_cuda}")
  if(NOT _spinerank_cuda STREQUAL "OFF")
    include(CheckLanguage)
    check_language(CUDA)
  endif()
  if(_spinerank_cuda STREQUAL "AUTO")
    spinerank_torch_cuda_version(_spinerank_torch_cuda)
    set(SPINERANK_CUDA_MODE "OFF")
    if(_spinerank_torch_cuda STREQUAL "")
      message(STATUS "spinerank_ext: torch has no CUDA: building the CPU kernels only")
    elseif(NOT CMAKE_CUDA_COMPILER)
      message(WARNING "spinerank_ext: torch has CUDA ${_spinerank_torch_cuda} but no nvcc was "
                      "found: building the CPU kernels only (set CUDACXX or CUDA_HOME)")
    elseif(CMAKE_VERSION VERSION_LESS 3.26)
      message(WARNING "spinerank_ext: the CUDA backend needs CMake >= 3.26, this is "
                      "${CMAKE_VERSION}: building the CPU kernels only (pip install 'cmake>=3.26')")
    else()
      set(SPINERANK_CUDA_MODE "ON")
    endif()
  elseif(NOT _spinerank_cuda STREQUAL "OFF")
    if(NOT CMAKE_CUDA_COMPILER)
      message(FATAL_ERROR "SPINERANK_CUDA=${_spinerank_cuda} but no nvcc was found (set CUDACXX or CUDA_HOME)")
    endif()
    if(CMAKE_VERSION VERSION_LESS 3.26)
      message(FATAL_ERROR "SPINERANK_CUDA=${_spinerank_cuda} needs CMake >= 3.26, this is ${CMAKE_VERSION} "
                          "(pip install 'cmake>=3.26')")
    endif()
  endif()
endmacro()

# "8.0 8.6;9.0+PTX" (torch's TORCH_CUDA_ARCH_LIST) -> "80-real;86-real;90-real;90-virtual".
function(spinerank_arch_list_to_cmake list out)
  string(REPLACE " " ";" list "${list}")
  set(result "")
  foreach(arch IN LISTS list)
    if(arch STREQUAL "")
      continue()
    endif()
    string(REGEX MATCH "^([0-9]+)\\.([0-9]+)([a-z]?)(\\+PTX)?$" match "${arch}")
    if(NOT match)
      message(FATAL_ERROR "TORCH_CUDA_ARCH_LIST: cannot read '${arch}' (expected e.g. 9.0 or 9.0+PTX)")
    endif()
    set(number "${CMAKE_MATCH_1}${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
    list(APPEND result "${number}-real")
    if(CMAKE_MATCH_4)
      list(APPEND result "${number}-virtual")
    endif()
  endforeach()
  set(${out} "${result}" PARENT_SCOPE)
endfunction()

# CMAKE_CUDA_ARCHITECTURES, which must be set before enable_language(CUDA).
function(spinerank_choose_cuda_architectures)
  if(DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    return()
  endif()
  if(NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    spinerank_arch_list_to_cmake("$ENV{TORCH_CUDA_ARCH_LIST}" archs)
  elseif(SPINERANK_CUDA_MODE STREQUAL "CHECK")
    set(archs "90")
  else()
    # The visible GPUs; without one, a spread of current GPUs (sm_90 among
    # them) plus PTX that newer ones can JIT-compile.
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c
        "import torch; print(';'.join(sorted({'%d%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))"
      OUTPUT_VARIABLE visible OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE failed ERROR_QUIET)
    if(NOT failed AND NOT visible STREQUAL "")
      set(archs "")
      foreach(arch IN LISTS visible)
        list(APPEND archs "${arch}-real")
      endforeach()
      list(GET visible -1 newest)
      list(APPEND archs "${newest}-virtual")
    else()
      set(archs "80-real;86-real;89-real;90-real;90-virtual")
    endif()
  endif()
  message(STATUS "spinerank_ext: CUDA architectures ${archs}")
  set(CMAKE_CUDA_ARCHITECTURES "${archs}" CACHE STRING "CUDA architectures" FORCE)
endfunction()

macro(spinerank_enable_cuda)
  spinerank_choose_cuda_architectures()
  enable_language(CUDA)
endmacro()

function(_spinerank_cuda_target_settings target)
  set_target_properties(${target} PROPERTIES
    CUDA_STANDARD 20
    CUDA_STANDARD_REQUIRED ON
    CXX_STANDARD 20
    CXX_STANDARD_REQUIRED ON)
  target_include_directories(${target} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/csrc)
  # --expt-relaxed-constexpr: torch's Half/BFloat16 call constexpr host
  # functions from host-device code.
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr>)
endfunction()

# CHECK: object files only. The CPU torch wheel carries the CUDA headers but no
# CUDA libraries and no generated cuda_cmake_macros.h, hence the define; the
# kernels include no header that needs cuBLAS & co.
function(spinerank_add_cuda_check target sources)
  add_library(${target} OBJECT ${sources})
  _spinerank_cuda_target_settings(${target})
  target_include_directories(${target} PRIVATE ${TORCH_INCLUDE_DIRS})
  target_compile_definitions(${target} PRIVATE C10_CUDA_NO_CMAKE_CONFIGURE_FILE)
endfunction()

# ON: the CUDA kernels as their own shared library, loaded by the Python package
# after _C (which registers the schemas) only when torch has CUDA.
function(spinerank_add_cuda_library target sources)
  find_package(CUDAToolkit REQUIRED)
  add_library(${target} SHARED ${sources})
  _spinerank_cuda_target_settings(${target})
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME "_C_cuda"
    PREFIX ""
    CXX_VISIBILITY_PRESET hidden
    CUDA_VISIBILITY_PRESET hidden)
  target_link_libraries(${target} PRIVATE ${TORCH_LIBRARIES} CUDA::cudart)
endfunction()

# Cross-compiling edgebench-native for 64-bit Arm Linux (Raspberry Pi OS 64-bit, Jetson L4T, Ubuntu arm64) from
# an x86_64 host with Debian/Ubuntu's g++-aarch64-linux-gnu. See docs/native.md, "Cross-compiling".
#   cmake -S native -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=native/cmake/aarch64-linux-gnu.cmake \
#         -DORT_ROOT=/path/to/onnxruntime-linux-aarch64-1.xx.x -DTFLITE_LIBRARY=/usr/lib/libtensorflowlite_c.so
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CROSS_PREFIX aarch64-linux-gnu- CACHE STRING "Cross toolchain prefix")
set(CMAKE_C_COMPILER ${CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${CROSS_PREFIX}g++)
if(DEFINED ENV{SYSROOT})
  set(CMAKE_SYSROOT $ENV{SYSROOT})  # a copy of the board's / (headers and libraries), if you link against it
endif()
# Look for programs on the host, for headers and libraries only in the target's paths (and ORT_ROOT).
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

// edgebench-native's command line (the flags of `edgebench bench` that concern one run, plus harness plumbing).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "protocol.hpp"
#include "runtimes.hpp"

namespace eb {

struct CommandLine {
  std::string model;
  std::string format;  // "tflite" / "onnx"; empty: from the file's content
  RuntimeOptions runtime;
  Settings settings;
  std::vector<std::string> shape_args;
  std::vector<std::string> input_args;
  uint64_t seed = 0;
  int events_fd = 1;
  std::string dump_inputs;   // directory: input_<i>.npy + manifest.json
  std::string dump_outputs;  // directory: output_<i>.npy + manifest.json
  bool help = false;
  bool version = false;
};

// Library defaults baked in at build time (CMake), overridden by EDGEBENCH_TFLITE_LIB / EDGEBENCH_ORT_LIB and
// by --tflite-lib / --ort-lib.
std::string default_tflite_library();
std::string default_ort_library();

// Throws Error(kExitUsage) for unknown flags, missing values and malformed numbers or durations.
CommandLine parse_command_line(const std::vector<std::string>& args);
std::string usage();
std::string version_text();

}  // namespace eb

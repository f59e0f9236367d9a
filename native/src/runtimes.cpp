// What both runtimes share: model format sniffing and the delegate / provider name check.
#include "runtimes.hpp"

#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>

#ifdef EDGEBENCH_WITH_ORT
#include "ort_api.hpp"
#endif

namespace eb {

std::string model_format(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) throw Error(kExitBadModel, "model file not found: " + path);
  if (S_ISDIR(info.st_mode)) throw Error(kExitBadModel, path + " is a directory, not a model file");
  if (info.st_size == 0) throw Error(kExitBadModel, path + " is empty");
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(kExitBadModel, "cannot read " + path);
  unsigned char head[8] = {0};
  file.read(reinterpret_cast<char*>(head), sizeof head);
  const std::streamsize got = file.gcount();
  // TFLite is a FlatBuffer with the file identifier "TFL3" at bytes 4..8; ONNX a protobuf ModelProto whose
  // first field (ir_version, varint) has tag byte 0x08 (agent/modelfile.py).
  if (got >= 8 && std::memcmp(head + 4, "TFL3", 4) == 0) {
    uint32_t root = 0;
    std::memcpy(&root, head, 4);  // little-endian, as FlatBuffers are
    if (static_cast<int64_t>(root) + 4 > static_cast<int64_t>(info.st_size) || info.st_size < 32)
      throw Error(kExitBadModel, path + " is a truncated TFLite file (" + std::to_string(info.st_size) +
                                     " bytes; its header points past the end)");
    return "tflite";
  }
  if (got >= 1 && head[0] == 0x08) return "onnx";
  const std::string lower = to_lower(path);
  const bool named = ends_with(lower, ".tflite") || ends_with(lower, ".lite") || ends_with(lower, ".onnx");
  std::string hex;
  for (int i = 0; i < got && i < 8; ++i) {
    char byte[4];
    std::snprintf(byte, sizeof byte, "%02x", head[i]);
    hex += (i ? " " : "") + std::string(byte);
  }
  throw Error(kExitBadModel, path + " is not a TFLite or ONNX model" +
                                 std::string(named ? " (named like one but its content is not)" : "") +
                                 ": first bytes " + hex);
}

void check_chain(const std::string& format, const RuntimeOptions& options) {
  if (format == "tflite") {
    for (const auto& name : options.delegates) {
      bool known = is_library_path(name);
      for (const char* const* builtin = kTfliteDelegateNames; *builtin && !known; ++builtin)
        known = to_lower(name) == *builtin;
      if (!known) {
        std::vector<std::string> names;
        for (const char* const* builtin = kTfliteDelegateNames; *builtin; ++builtin) names.push_back(*builtin);
        throw Error(kExitUnknownDelegate, "unknown TFLite delegate '" + name + "'; choose from " + join(names, ", ") +
                                              ", or give the path of a delegate .so");
      }
    }
  } else {
#ifdef EDGEBENCH_WITH_ORT
    for (const auto& name : options.providers) {
      if (ort::provider_name(name).empty())
        throw Error(kExitUnknownDelegate, "unknown ONNX Runtime execution provider '" + name + "'; choose from " +
                                              ort::known_providers() + " (or their full names, e.g. CUDAExecutionProvider)");
    }
#endif
  }
}

#ifndef EDGEBENCH_WITH_TFLITE
const char* const kTfliteDelegateNames[] = {nullptr};
bool is_library_path(const std::string& name) { return ends_with(name, ".so"); }
std::string tflite_delegate_library(const std::string& name) { return name; }
std::unique_ptr<Session> load_tflite(const std::string&, const RuntimeOptions&) {
  throw Error(kExitMissingLibrary, "this edgebench-native was built without TensorFlow Lite (EDGEBENCH_WITH_TFLITE=OFF)");
}
#endif

#ifndef EDGEBENCH_WITH_ORT
std::unique_ptr<Session> load_onnx(const std::string&, const RuntimeOptions&) {
  throw Error(kExitMissingLibrary, "this edgebench-native was built without ONNX Runtime (EDGEBENCH_WITH_ORT=OFF): "
                                   "configure CMake with the ONNX Runtime headers (docs/native.md)");
}
#endif

}  // namespace eb

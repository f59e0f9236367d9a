// The two runtimes the harness drives: TensorFlow Lite through its C API and ONNX Runtime through its C/C++ API.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "protocol.hpp"

namespace eb {

struct RuntimeOptions {
  std::optional<int> threads;
  std::vector<std::string> delegates;  // TFLite chain: xnnpack, cpu, ref, gpu, nnapi, ... or a delegate .so path
  std::vector<std::string> providers;  // ONNX Runtime chain, short or full names
  std::vector<std::pair<std::string, std::string>> delegate_options;
  std::string tflite_library;  // the TFLite C library to dlopen
  std::string ort_library;     // libonnxruntime.so to dlopen
  std::string profile_dir;     // where ONNX Runtime writes its profiles (--profile-dir); none: no placement, and
                               // --profile-runs writes to $TMPDIR or /tmp
};

// "tflite" / "onnx" from the file's content (modelfile._sniff), else from its extension; throws
// Error(kExitBadModel) for a missing, empty or unrecognised file.
std::string model_format(const std::string& path);

// Throws Error(kExitUnknownDelegate) for a delegate or provider name the harness does not know, before any
// library is loaded.
void check_chain(const std::string& format, const RuntimeOptions& options);

std::unique_ptr<Session> load_tflite(const std::string& model, const RuntimeOptions& options);
std::unique_ptr<Session> load_onnx(const std::string& model, const RuntimeOptions& options);

// TFLite delegate names the harness knows (besides .so paths).
extern const char* const kTfliteDelegateNames[];

// The external delegate library a TFLite name stands for ("gpu" -> "libtensorflowlite_gpu_delegate.so"), the
// path itself for a .so path, "" for the built-in ones (xnnpack, cpu, ref).
std::string tflite_delegate_library(const std::string& name);
bool is_library_path(const std::string& name);

}  // namespace eb

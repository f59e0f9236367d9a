#include "ort_api.hpp"

#include <dlfcn.h>

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "common.hpp"

namespace eb {
namespace ort {
namespace {

// The Python plugin's SHORT_NAMES (agent/runtimes/ort.py) plus the providers ORT's generic
// SessionOptionsAppendExecutionProvider knows.
const std::vector<std::pair<std::string, std::string>>& short_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"cpu", "CPUExecutionProvider"},         {"cuda", "CUDAExecutionProvider"},
      {"tensorrt", "TensorrtExecutionProvider"}, {"trt", "TensorrtExecutionProvider"},
      {"openvino", "OpenVINOExecutionProvider"}, {"coreml", "CoreMLExecutionProvider"},
      {"nnapi", "NnapiExecutionProvider"},     {"qnn", "QNNExecutionProvider"},
      {"rocm", "ROCMExecutionProvider"},       {"migraphx", "MIGraphXExecutionProvider"},
      {"dml", "DmlExecutionProvider"},         {"xnnpack", "XnnpackExecutionProvider"},
      {"acl", "ACLExecutionProvider"},         {"armnn", "ArmNNExecutionProvider"},
      {"snpe", "SNPEExecutionProvider"},       {"webgpu", "WebGpuExecutionProvider"},
      {"webnn", "WebNNExecutionProvider"},     {"js", "JsExecutionProvider"},
      {"vitisai", "VitisAIExecutionProvider"}, {"azure", "AzureExecutionProvider"},
      {"cann", "CANNExecutionProvider"},       {"dnnl", "DnnlExecutionProvider"},
  };
  return names;
}

}  // namespace

std::string provider_name(const std::string& name) {
  const std::string lower = to_lower(name);
  for (const auto& entry : short_names()) {
    if (lower == entry.first || lower == to_lower(entry.second) || lower + "executionprovider" == to_lower(entry.second))
      return entry.second;
  }
  return "";
}

std::string known_providers() {
  std::vector<std::string> names;
  for (const auto& entry : short_names())
    if (entry.first != "trt") names.push_back(entry.first);
  return join(names, ", ");
}

const Library& load_library(const std::string& path) {
  static std::map<std::string, std::unique_ptr<Library>> loaded;
  auto found = loaded.find(path);
  if (found != loaded.end()) return *found->second;
  auto library = std::make_unique<Library>();
  library->path = path;
  library->handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library->handle) {
    const char* why = dlerror();
    throw Error(kExitMissingLibrary,
                "cannot load the ONNX Runtime library " + path + ": " + (why ? why : "unknown error") +
                    "; build the harness with its dependencies (`make native`, which runs native/fetch_deps.py) or "
                    "set EDGEBENCH_ORT_LIB (edgebench-native --ort-lib) to libonnxruntime.so");
  }
  using GetApiBase = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBase>(dlsym(library->handle, "OrtGetApiBase"));
  if (!get_api_base) {
    dlclose(library->handle);
    throw Error(kExitMissingLibrary, path + " loads but is not ONNX Runtime: it does not export OrtGetApiBase");
  }
  const OrtApiBase* base = get_api_base();
  library->version = base->GetVersionString ? base->GetVersionString() : "unknown";
  library->api = base->GetApi(ORT_API_VERSION);
  if (!library->api) {
    throw Error(kExitMissingLibrary, "ONNX Runtime " + library->version + " at " + path +
                                         " does not provide API version " + std::to_string(ORT_API_VERSION) +
                                         ", which the harness was built against; use ONNX Runtime >= 1." +
                                         std::to_string(ORT_API_VERSION) + " or rebuild against its headers");
  }
  Ort::InitApi(library->api);
  const Library& result = *library;
  loaded.emplace(path, std::move(library));
  return result;
}

}  // namespace ort
}  // namespace eb

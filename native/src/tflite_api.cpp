#include "tflite_api.hpp"

#include <dlfcn.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <vector>

#include "common.hpp"

namespace eb {
namespace tflite {
namespace {

template <class F>
bool bind(void* handle, const char* name, F*& slot) {
  slot = reinterpret_cast<F*>(dlsym(handle, name));
  return slot != nullptr;
}

}  // namespace

const Api& load_api(const std::string& library) {
  static std::map<std::string, std::unique_ptr<Api>> loaded;
  auto found = loaded.find(library);
  if (found != loaded.end()) return *found->second;
  auto api = std::make_unique<Api>();
  api->path = library;
  // RTLD_LOCAL: the runtime's symbols stay out of the global namespace, where a delegate could pick them up.
  api->handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!api->handle) {
    const char* why = dlerror();
    throw Error(kExitMissingLibrary,
                "cannot load the TensorFlow Lite C library " + library + ": " + (why ? why : "unknown error") +
                    "; build the harness with its dependencies (`make native`, which runs native/fetch_deps.py) or "
                    "set EDGEBENCH_TFLITE_LIB (edgebench-native --tflite-lib) to a TensorFlow Lite C library");
  }
  void* h = api->handle;
  std::string missing;
#define EB_REQUIRE(name) \
  if (!bind(h, #name, api->name)) missing += std::string(missing.empty() ? "" : ", ") + #name;
  EB_REQUIRE(TfLiteVersion)
  EB_REQUIRE(TfLiteModelCreateFromFile)
  EB_REQUIRE(TfLiteModelDelete)
  EB_REQUIRE(TfLiteInterpreterOptionsCreate)
  EB_REQUIRE(TfLiteInterpreterOptionsDelete)
  EB_REQUIRE(TfLiteInterpreterOptionsSetNumThreads)
  EB_REQUIRE(TfLiteInterpreterOptionsAddDelegate)
  EB_REQUIRE(TfLiteInterpreterOptionsSetErrorReporter)
  EB_REQUIRE(TfLiteInterpreterCreate)
  EB_REQUIRE(TfLiteInterpreterDelete)
  EB_REQUIRE(TfLiteInterpreterGetInputTensorCount)
  EB_REQUIRE(TfLiteInterpreterGetInputTensor)
  EB_REQUIRE(TfLiteInterpreterGetOutputTensorCount)
  EB_REQUIRE(TfLiteInterpreterGetOutputTensor)
  EB_REQUIRE(TfLiteInterpreterResizeInputTensor)
  EB_REQUIRE(TfLiteInterpreterAllocateTensors)
  EB_REQUIRE(TfLiteInterpreterInvoke)
  EB_REQUIRE(TfLiteTensorType)
  EB_REQUIRE(TfLiteTensorNumDims)
  EB_REQUIRE(TfLiteTensorDim)
  EB_REQUIRE(TfLiteTensorByteSize)
  EB_REQUIRE(TfLiteTensorData)
  EB_REQUIRE(TfLiteTensorName)
  EB_REQUIRE(TfLiteTensorQuantizationParams)
  EB_REQUIRE(TfLiteTensorCopyFromBuffer)
  EB_REQUIRE(TfLiteTensorCopyToBuffer)
#undef EB_REQUIRE
  if (!missing.empty()) {
    dlclose(h);
    throw Error(kExitMissingLibrary, library + " loads but is not a TensorFlow Lite C library: it does not export " +
                                         missing);
  }
  bind(h, "TfLiteModelCreateFromFileWithErrorReporter", api->TfLiteModelCreateFromFileWithErrorReporter);
  bind(h, "TfLiteTensorGetDimsSignature", api->TfLiteTensorGetDimsSignature);
  bind(h, "TfLiteInterpreterGetInputTensorIndex", api->TfLiteInterpreterGetInputTensorIndex);
  bind(h, "TfLiteInterpreterGetOutputTensorIndex", api->TfLiteInterpreterGetOutputTensorIndex);
  bind(h, "TfLiteXNNPackDelegateOptionsDefault", api->TfLiteXNNPackDelegateOptionsDefault);
  bind(h, "TfLiteXNNPackDelegateCreate", api->TfLiteXNNPackDelegateCreate);
  bind(h, "TfLiteXNNPackDelegateDelete", api->TfLiteXNNPackDelegateDelete);
#define EB_OPTIONAL(name) bind(h, #name, api->name);
  EB_OPTIONAL(TfLiteOpaqueDelegateCreate)
  EB_OPTIONAL(TfLiteOpaqueDelegateDelete)
  EB_OPTIONAL(TfLiteOpaqueContextGetExecutionPlan)
  EB_OPTIONAL(TfLiteOpaqueContextGetNumNodes)
  EB_OPTIONAL(TfLiteOpaqueContextGetNodeAndRegistration)
  EB_OPTIONAL(TfLiteOpaqueContextGetOpaqueTensor)
  EB_OPTIONAL(TfLiteOpaqueTensorName)
  EB_OPTIONAL(TfLiteOpaqueNodeInputs)
  EB_OPTIONAL(TfLiteOpaqueNodeOutputs)
  EB_OPTIONAL(TfLiteOperatorGetBuiltInCode)
  EB_OPTIONAL(TfLiteOperatorGetCustomName)
  EB_OPTIONAL(TfLiteInterpreterOptionsSetTelemetryProfiler)
#undef EB_OPTIONAL
  const Api& result = *api;
  loaded.emplace(library, std::move(api));
  return result;
}

std::string Api::missing_for_graph() const {
  std::vector<std::string> missing;
#define EB_NEEDED(name) \
  if (!name) missing.push_back(#name);
  EB_NEEDED(TfLiteOpaqueDelegateCreate)
  EB_NEEDED(TfLiteOpaqueDelegateDelete)
  EB_NEEDED(TfLiteOpaqueContextGetExecutionPlan)
  EB_NEEDED(TfLiteOpaqueContextGetNumNodes)
  EB_NEEDED(TfLiteOpaqueContextGetNodeAndRegistration)
  EB_NEEDED(TfLiteOpaqueContextGetOpaqueTensor)
  EB_NEEDED(TfLiteOpaqueTensorName)
  EB_NEEDED(TfLiteOpaqueNodeInputs)
  EB_NEEDED(TfLiteOpaqueNodeOutputs)
  EB_NEEDED(TfLiteOperatorGetBuiltInCode)
  EB_NEEDED(TfLiteOperatorGetCustomName)
#undef EB_NEEDED
  return join(missing, ", ");
}

ExternalDelegate load_external_delegate(const std::string& library, const char* const* keys,
                                        const char* const* values, std::size_t count) {
  ExternalDelegate external;
  external.handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!external.handle) {
    const char* why = dlerror();
    throw std::runtime_error(std::string("cannot load ") + library + ": " + (why ? why : "unknown error"));
  }
  using Create = Delegate* (*)(char**, char**, std::size_t, void (*)(const char*));
  Create create = reinterpret_cast<Create>(dlsym(external.handle, "tflite_plugin_create_delegate"));
  external.destroy = reinterpret_cast<void (*)(Delegate*)>(dlsym(external.handle, "tflite_plugin_destroy_delegate"));
  if (!create || !external.destroy) {
    dlclose(external.handle);
    throw std::runtime_error(library + " is not a TFLite external delegate (it does not export "
                                       "tflite_plugin_create_delegate and tflite_plugin_destroy_delegate)");
  }
  static thread_local std::string reported;
  reported.clear();
  external.delegate = create(const_cast<char**>(keys), const_cast<char**>(values), count,
                             [](const char* message) { reported += message ? message : ""; });
  if (!external.delegate) {
    dlclose(external.handle);
    throw std::runtime_error(library + " refused to create a delegate" +
                             (reported.empty() ? std::string() : ": " + first_line(reported)));
  }
  return external;
}

}  // namespace tflite
}  // namespace eb

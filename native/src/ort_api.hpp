// ONNX Runtime bound at run time: dlopen the library, take OrtGetApiBase, ask it for the API version the
// headers were written for (ORT_API_VERSION), and hand that to the C++ API (ORT_API_MANUAL_INIT). Every ORT
// call after that goes through the OrtApi table, as it does when linking directly.
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include <onnxruntime_cxx_api.h>

#include <string>

namespace eb {
namespace ort {

struct Library {
  void* handle = nullptr;
  std::string path;
  std::string version;  // OrtApiBase::GetVersionString()
  const OrtApi* api = nullptr;
};

// Loads the library once and initialises the C++ API; throws Error(kExitMissingLibrary).
const Library& load_library(const std::string& path);

// Short and long execution provider names -> ORT's registered names ("cuda" -> "CUDAExecutionProvider");
// an empty string for a name ORT does not know.
std::string provider_name(const std::string& name);
// Every provider name the harness knows (for the unknown-provider message).
std::string known_providers();

}  // namespace ort
}  // namespace eb

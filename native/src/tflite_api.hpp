// The TensorFlow Lite C API, bound at run time with dlopen/dlsym.
//
// No registry ships the TFLite C headers, so the few functions the harness calls are declared here, with
// opaque handles, from the documented signatures of tensorflow/lite/core/c/c_api.h, common.h and
// delegates/xnnpack/xnnpack_delegate.h (TFLite 2.x; checked against liblitert-lm.so 0.18.1 = TFLite 2.23).
// Binding at run time means one binary serves both runtimes, and a missing library is a clear error with its
// own exit code rather than a dynamic-loader failure before main().
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <string>

namespace eb {
namespace tflite {

struct Model;               // TfLiteModel
struct InterpreterOptions;  // TfLiteInterpreterOptions
struct Interpreter;         // TfLiteInterpreter
struct Tensor;              // TfLiteTensor
struct Delegate;            // TfLiteDelegate (== TfLiteOpaqueDelegate in the C API)

// TfLiteType values (tensorflow/lite/core/c/c_api_types.h).
enum Type : int {
  kNoType = 0, kFloat32 = 1, kInt32 = 2, kUInt8 = 3, kInt64 = 4, kString = 5, kBool = 6, kInt16 = 7,
  kComplex64 = 8, kInt8 = 9, kFloat16 = 10, kFloat64 = 11, kComplex128 = 12, kUInt64 = 13, kResource = 14,
  kVariant = 15, kUInt32 = 16, kUInt16 = 17, kInt4 = 18, kBFloat16 = 19,
};
enum Status : int { kOk = 0, kError = 1, kDelegateError = 2, kApplicationError = 3 };

struct QuantizationParams {  // TfLiteQuantizationParams, returned by value
  float scale;
  int32_t zero_point;
};
struct IntArray {  // TfLiteIntArray
  int size;
  int data[1];
};

// TfLiteXNNPackDelegateOptions begins with num_threads (int32) and flags (uint32 in older releases, runtime
// flags in newer ones); the rest of its fields changed between releases. The harness only writes num_threads
// into a copy of TfLiteXNNPackDelegateOptionsDefault(), so declaring the head plus room for the tail is enough:
// the library writes (and reads) its own layout within this storage.
struct alignas(8) XnnpackOptions {
  int32_t num_threads;
  uint32_t second;
  unsigned char tail[248];
};

using ErrorReporter = void (*)(void* user_data, const char* format, va_list args);

struct Api {
  void* handle = nullptr;
  std::string path;
  // required
  const char* (*TfLiteVersion)();
  Model* (*TfLiteModelCreateFromFile)(const char*);
  void (*TfLiteModelDelete)(Model*);
  InterpreterOptions* (*TfLiteInterpreterOptionsCreate)();
  void (*TfLiteInterpreterOptionsDelete)(InterpreterOptions*);
  void (*TfLiteInterpreterOptionsSetNumThreads)(InterpreterOptions*, int32_t);
  void (*TfLiteInterpreterOptionsAddDelegate)(InterpreterOptions*, Delegate*);
  void (*TfLiteInterpreterOptionsSetErrorReporter)(InterpreterOptions*, ErrorReporter, void*);
  Interpreter* (*TfLiteInterpreterCreate)(const Model*, const InterpreterOptions*);
  void (*TfLiteInterpreterDelete)(Interpreter*);
  int32_t (*TfLiteInterpreterGetInputTensorCount)(const Interpreter*);
  Tensor* (*TfLiteInterpreterGetInputTensor)(const Interpreter*, int32_t);
  int32_t (*TfLiteInterpreterGetOutputTensorCount)(const Interpreter*);
  const Tensor* (*TfLiteInterpreterGetOutputTensor)(const Interpreter*, int32_t);
  int (*TfLiteInterpreterResizeInputTensor)(Interpreter*, int32_t, const int*, int32_t);
  int (*TfLiteInterpreterAllocateTensors)(Interpreter*);
  int (*TfLiteInterpreterInvoke)(Interpreter*);
  int (*TfLiteTensorType)(const Tensor*);
  int32_t (*TfLiteTensorNumDims)(const Tensor*);
  int32_t (*TfLiteTensorDim)(const Tensor*, int32_t);
  size_t (*TfLiteTensorByteSize)(const Tensor*);
  void* (*TfLiteTensorData)(const Tensor*);
  const char* (*TfLiteTensorName)(const Tensor*);
  QuantizationParams (*TfLiteTensorQuantizationParams)(const Tensor*);
  int (*TfLiteTensorCopyFromBuffer)(Tensor*, const void*, size_t);
  int (*TfLiteTensorCopyToBuffer)(const Tensor*, void*, size_t);
  // optional (nullptr when the library does not export them)
  Model* (*TfLiteModelCreateFromFileWithErrorReporter)(const char*, ErrorReporter, void*) = nullptr;
  const IntArray* (*TfLiteTensorGetDimsSignature)(const Tensor*) = nullptr;
  int32_t (*TfLiteInterpreterGetInputTensorIndex)(const Interpreter*, int32_t) = nullptr;
  int32_t (*TfLiteInterpreterGetOutputTensorIndex)(const Interpreter*, int32_t) = nullptr;
  XnnpackOptions (*TfLiteXNNPackDelegateOptionsDefault)() = nullptr;
  Delegate* (*TfLiteXNNPackDelegateCreate)(const XnnpackOptions*) = nullptr;
  void (*TfLiteXNNPackDelegateDelete)(Delegate*) = nullptr;

  bool has_xnnpack() const {
    return TfLiteXNNPackDelegateOptionsDefault && TfLiteXNNPackDelegateCreate && TfLiteXNNPackDelegateDelete;
  }
};

// Loads the library (once per process) and binds the API; throws Error(kExitMissingLibrary) saying what is
// missing and how to get it.
const Api& load_api(const std::string& library);

// The external delegate plugin interface (tensorflow/lite/delegates/external): a delegate .so exports
// tflite_plugin_create_delegate / tflite_plugin_destroy_delegate. This is what TfLiteExternalDelegateCreate
// and Python's load_delegate() use; liblitert-lm.so does not export TfLiteExternalDelegate*, so the harness
// speaks the plugin interface itself.
struct ExternalDelegate {
  void* handle = nullptr;
  Delegate* delegate = nullptr;
  void (*destroy)(Delegate*) = nullptr;
};
// Throws std::runtime_error with the reason when the library cannot be loaded or refuses to create a delegate.
ExternalDelegate load_external_delegate(const std::string& library, const char* const* keys,
                                        const char* const* values, std::size_t count);

}  // namespace tflite
}  // namespace eb

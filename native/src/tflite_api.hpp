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
struct OpaqueContext;       // TfLiteOpaqueContext: a subgraph, as a delegate's Prepare sees it
struct OpaqueNode;          // TfLiteOpaqueNode
struct OpaqueTensor;        // TfLiteOpaqueTensor
struct Operator;            // TfLiteOperator (TfLiteRegistrationExternal in older releases)

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

// kTfLiteBuiltinCustom and kTfLiteBuiltinDelegate (tensorflow/lite/builtin_ops.h).
constexpr int kBuiltinCustom = 32;
constexpr int kBuiltinDelegate = 51;
// TfLiteDelegateFlags: kTfLiteDelegateFlagsAllowDynamicTensors, kTfLiteDelegateFlagsPerOperatorProfiling.
constexpr int64_t kDelegateFlagsAllowDynamicTensors = 1;
constexpr int64_t kDelegateFlagsPerOperatorProfiling = 4;

// The head of TfLiteDelegate (tensorflow/lite/core/c/common.h), as every delegate the harness adds is one: data_,
// the four callbacks, then flags. Only flags is ever written (OpTimer::clear_per_operator_profiling).
struct DelegateHead {
  void* data;
  void* prepare;
  void* copy_from_buffer_handle;
  void* copy_to_buffer_handle;
  void* free_buffer_handle;
  int64_t flags;
};

// TfLiteOpaqueDelegateBuilder (tensorflow/lite/core/c/common.h; "not ABI stable", the same fields from TFLite
// 2.11 to 2.23). The harness's observer delegate sets only data, Prepare and flags; the buffer-handle callbacks
// stay null, as for a delegate that owns no buffers.
struct OpaqueDelegateBuilder {
  void* data;
  int (*Prepare)(OpaqueContext* context, Delegate* delegate, void* data);
  int (*CopyFromBufferHandle)(OpaqueContext*, Delegate*, void*, int, OpaqueTensor*);
  int (*CopyToBufferHandle)(OpaqueContext*, Delegate*, void*, int, OpaqueTensor*);
  void (*FreeBufferHandle)(OpaqueContext*, Delegate*, void*, int*);
  int64_t flags;
};

// TfLiteTelemetryProfilerStruct (tensorflow/lite/profiling/telemetry/c/profiler.h, also "not ABI stable"). The
// interpreter calls ReportBeginOpInvokeEvent / ReportEndOpInvokeEvent around each node it invokes (a delegate
// kernel is one node), and ReportOpInvokeEvent for the times a delegate measures itself inside its kernel.
struct TelemetryProfiler {
  void* data;
  void (*ReportTelemetryEvent)(TelemetryProfiler* profiler, const char* event_name, uint64_t status);
  void (*ReportTelemetryOpEvent)(TelemetryProfiler* profiler, const char* event_name, int64_t op_idx,
                                 int64_t subgraph_idx, uint64_t status);
  void (*ReportSettings)(TelemetryProfiler* profiler, const char* setting_name, const void* settings);
  uint32_t (*ReportBeginOpInvokeEvent)(TelemetryProfiler* profiler, const char* op_name, int64_t op_idx,
                                       int64_t subgraph_idx);
  void (*ReportEndOpInvokeEvent)(TelemetryProfiler* profiler, uint32_t event_handle);
  void (*ReportOpInvokeEvent)(TelemetryProfiler* profiler, const char* op_name, uint64_t elapsed_us, int64_t op_idx,
                              int64_t subgraph_idx);
};

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
  // placement: the observer delegate (c_api_opaque.h), all optional
  Delegate* (*TfLiteOpaqueDelegateCreate)(const OpaqueDelegateBuilder*) = nullptr;
  void (*TfLiteOpaqueDelegateDelete)(Delegate*) = nullptr;
  int (*TfLiteOpaqueContextGetExecutionPlan)(OpaqueContext*, IntArray**) = nullptr;
  size_t (*TfLiteOpaqueContextGetNumNodes)(const OpaqueContext*) = nullptr;
  int (*TfLiteOpaqueContextGetNodeAndRegistration)(OpaqueContext*, int, OpaqueNode**, Operator**) = nullptr;
  OpaqueTensor* (*TfLiteOpaqueContextGetOpaqueTensor)(const OpaqueContext*, int) = nullptr;
  const char* (*TfLiteOpaqueTensorName)(const OpaqueTensor*) = nullptr;
  int (*TfLiteOpaqueNodeInputs)(const OpaqueNode*, const int**, int*) = nullptr;
  int (*TfLiteOpaqueNodeOutputs)(const OpaqueNode*, const int**, int*) = nullptr;
  int (*TfLiteOperatorGetBuiltInCode)(const Operator*) = nullptr;
  const char* (*TfLiteOperatorGetCustomName)(const Operator*) = nullptr;
  // per-op time: the telemetry profiler (optional)
  void (*TfLiteInterpreterOptionsSetTelemetryProfiler)(InterpreterOptions*, TelemetryProfiler*) = nullptr;

  bool has_xnnpack() const {
    return TfLiteXNNPackDelegateOptionsDefault && TfLiteXNNPackDelegateCreate && TfLiteXNNPackDelegateDelete;
  }
  // Every function the observer delegate needs (placement); the names of those missing, "" when none is.
  std::string missing_for_graph() const;
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

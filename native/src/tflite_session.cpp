// TensorFlow Lite sessions: the delegate chain, tensor specs, binding and invoking (agent/runtimes/litert.py's
// behaviour, through the C API).
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "runtimes.hpp"
#include "tflite_api.hpp"
#include "tflite_graph.hpp"

namespace eb {

const char* const kTfliteDelegateNames[] = {"xnnpack", "cpu", "ref", "gpu", "edgetpu", "nnapi",
                                            "hexagon", "armnn", "qnn", nullptr};

namespace {

// Library names of the common external delegates (the Python plugin's EXTERNAL_DELEGATES).
const char* external_library(const std::string& key) {
  if (key == "gpu") return "libtensorflowlite_gpu_delegate.so";
  if (key == "edgetpu") return "libedgetpu.so.1";
  if (key == "nnapi") return "libnnapi_delegate.so";
  if (key == "hexagon") return "libhexagon_delegate.so";
  if (key == "armnn") return "libarmnnDelegate.so";
  if (key == "qnn") return "libQnnTFLiteDelegate.so";
  return nullptr;
}

DType to_dtype(int type, std::string* label) {
  switch (type) {
    case tflite::kFloat32: return DType::kFloat32;
    case tflite::kFloat16: return DType::kFloat16;
    case tflite::kFloat64: return DType::kFloat64;
    case tflite::kInt8: return DType::kInt8;
    case tflite::kUInt8: return DType::kUInt8;
    case tflite::kInt16: return DType::kInt16;
    case tflite::kUInt16: return DType::kUInt16;
    case tflite::kInt32: return DType::kInt32;
    case tflite::kUInt32: return DType::kUInt32;
    case tflite::kInt64: return DType::kInt64;
    case tflite::kUInt64: return DType::kUInt64;
    case tflite::kBool: return DType::kBool;
    case tflite::kString: *label = "str"; return DType::kString;
    case tflite::kComplex64: *label = "complex64"; return DType::kUnknown;
    case tflite::kComplex128: *label = "complex128"; return DType::kUnknown;
    case tflite::kInt4: *label = "int4"; return DType::kUnknown;
    case tflite::kBFloat16: *label = "bfloat16"; return DType::kUnknown;
    default: *label = "tflite-type-" + std::to_string(type); return DType::kUnknown;
  }
}

std::string model_error(const std::string& message) {
  const std::string first = first_line(message);
  if (message.find("Didn't find op") != std::string::npos || to_lower(message).find("unsupported") != std::string::npos ||
      message.find("unresolved custom op") != std::string::npos)
    return "the model uses an operator this TFLite runtime does not support: " + first;
  return "TFLite cannot load the model: " + (first.empty() ? std::string("unknown error") : first);
}

void collect(void* user_data, const char* format, va_list args) {
  char buffer[2048];
  va_list copy;
  va_copy(copy, args);
  std::vsnprintf(buffer, sizeof buffer, format, copy);
  va_end(copy);
  auto* sink = static_cast<std::string*>(user_data);
  if (!sink->empty()) *sink += '\n';
  *sink += buffer;
}

class TfliteSession final : public Session {
 public:
  // `timer`: the profiling session's (op_profiler), set on the interpreter's options before it is created.
  explicit TfliteSession(const tflite::Api& api, OpTimer* timer = nullptr)
      : api_(api), invoke_(api.TfLiteInterpreterInvoke), timer_(timer) {}

  ~TfliteSession() override { release_interpreter(); if (model_) api_.TfLiteModelDelete(model_); }

  void load(const std::string& path, const RuntimeOptions& options) {
    path_ = path;
    options_given_ = options;
    errors_.clear();
    model_ = api_.TfLiteModelCreateFromFileWithErrorReporter
                 ? api_.TfLiteModelCreateFromFileWithErrorReporter(path.c_str(), collect, &errors_)
                 : api_.TfLiteModelCreateFromFile(path.c_str());
    if (!model_) throw Error(kExitBadModel, model_error(errors_));
    std::vector<std::string> chain = options.delegates;
    if (chain.empty()) chain.push_back("xnnpack");
    backend.module = "tflite-c";
    backend.version = api_.TfLiteVersion();
    backend.requested = chain;
    backend.threads = options.threads;
    backend.notes.push_back("TensorFlow Lite C API from " + api_.path);
    std::string last_error;
    for (const auto& candidate : chain) {
      std::string reason;
      if (try_candidate(candidate, options, &reason)) {
        backend.used = {candidate};
        describe();
        return;
      }
      backend.fallbacks.push_back({candidate, reason});
      last_error = reason;
    }
    throw Error(kExitNoBackend, "no delegate in the chain " + join(chain, ",") + " could run the model; last error: " +
                                    last_error);
  }

  void bind(const std::vector<Array>& feeds) override {
    bool resized = false;
    for (std::size_t i = 0; i < feeds.size(); ++i) {
      const tflite::Tensor* tensor = api_.TfLiteInterpreterGetInputTensor(interpreter_, static_cast<int32_t>(i));
      if (current_shape(tensor) != feeds[i].shape) {
        std::vector<int> dims(feeds[i].shape.begin(), feeds[i].shape.end());
        errors_.clear();
        if (api_.TfLiteInterpreterResizeInputTensor(interpreter_, static_cast<int32_t>(i), dims.data(),
                                                    static_cast<int32_t>(dims.size())) != tflite::kOk)
          throw Error(kExitBadInput, "the model does not accept these inputs: cannot resize input '" + inputs[i].name +
                                         "' to " + format_shape(feeds[i].shape) + ": " + first_line(errors_));
        resized = true;
      }
    }
    if (resized) {
      errors_.clear();
      if (api_.TfLiteInterpreterAllocateTensors(interpreter_) != tflite::kOk)
        throw Error(kExitBadInput, "the model does not accept these inputs: " + first_line(errors_));
    }
    for (std::size_t i = 0; i < feeds.size(); ++i) {
      tflite::Tensor* tensor = api_.TfLiteInterpreterGetInputTensor(interpreter_, static_cast<int32_t>(i));
      const std::size_t expected = api_.TfLiteTensorByteSize(tensor);
      if (expected != feeds[i].byte_size() ||
          api_.TfLiteTensorCopyFromBuffer(tensor, feeds[i].data.data(), feeds[i].byte_size()) != tflite::kOk)
        throw Error(kExitBadInput, "the model does not accept these inputs: input '" + inputs[i].name + "' takes " +
                                       std::to_string(expected) + " bytes, the data has " +
                                       std::to_string(feeds[i].byte_size()));
    }
  }

  void run() override {
    if (invoke_(interpreter_) != tflite::kOk) invoke_failed();
  }

  Json placement() override {
    const Graph* graph = observer_ ? observer_->graph() : nullptr;
    if (!graph) {
      placement_note = graph_unknown();
      return Json();
    }
    return tflite_placement(*graph, backend.used.front(), backend.requested.front());
  }

  std::unique_ptr<OpProfiler> op_profiler(const std::vector<Array>& feeds, int64_t runs,
                                          std::string* unavailable) override;

  const Graph* graph() const { return observer_ ? observer_->graph() : nullptr; }
  std::string graph_unknown() const { return observer_ ? observer_->why() : "no graph observer"; }

  std::vector<Array> fetch_outputs() override {
    std::vector<Array> result;
    const int32_t count = api_.TfLiteInterpreterGetOutputTensorCount(interpreter_);
    for (int32_t i = 0; i < count; ++i) {
      const tflite::Tensor* tensor = api_.TfLiteInterpreterGetOutputTensor(interpreter_, i);
      Array array;
      std::string label;
      array.dtype = to_dtype(api_.TfLiteTensorType(tensor), &label);
      if (dtype_size(array.dtype) == 0)
        throw Error(kExitInferenceFailed, "output '" + outputs[static_cast<std::size_t>(i)].name + "' has dtype " +
                                              label + ", which the harness cannot save");
      array.shape = current_shape(tensor);
      array.data.resize(api_.TfLiteTensorByteSize(tensor));
      if (array.data.size() != static_cast<std::size_t>(array.element_count()) * dtype_size(array.dtype) ||
          api_.TfLiteTensorCopyToBuffer(tensor, array.data.data(), array.data.size()) != tflite::kOk)
        throw Error(kExitInferenceFailed, "cannot read output '" + outputs[static_cast<std::size_t>(i)].name + "'");
      result.push_back(std::move(array));
    }
    return result;
  }

 private:
  [[noreturn]] void invoke_failed() {
    const std::string message = first_line(errors_);
    throw Error(kExitInferenceFailed, message.empty() ? "TfLiteInterpreterInvoke failed" : message);
  }

  std::vector<int64_t> current_shape(const tflite::Tensor* tensor) const {
    std::vector<int64_t> shape;
    const int32_t n = api_.TfLiteTensorNumDims(tensor);
    for (int32_t d = 0; d < n; ++d) shape.push_back(api_.TfLiteTensorDim(tensor, d));
    return shape;
  }

  void release_interpreter() {
    if (interpreter_) api_.TfLiteInterpreterDelete(interpreter_);
    interpreter_ = nullptr;
    if (options_) api_.TfLiteInterpreterOptionsDelete(options_);
    options_ = nullptr;
    if (xnnpack_) api_.TfLiteXNNPackDelegateDelete(xnnpack_);
    xnnpack_ = nullptr;
    // An external delegate's library stays loaded: some delegates crash when unloaded before process exit.
    if (external_.delegate) external_.destroy(external_.delegate);
    external_ = tflite::ExternalDelegate{};
    observer_.reset();  // after the interpreter, like every delegate
  }

  // The observer goes last in the chain: its Prepare sees the graph after the real delegate took its nodes.
  void add_observer() {
    observer_ = std::make_unique<GraphObserver>(api_);
    if (observer_->delegate()) api_.TfLiteInterpreterOptionsAddDelegate(options_, observer_->delegate());
  }

  // One candidate of the chain; false (with the reason) when it cannot run the model and the next should try.
  bool try_candidate(const std::string& candidate, const RuntimeOptions& options, std::string* reason) {
    const std::string key = to_lower(candidate);
    options_ = api_.TfLiteInterpreterOptionsCreate();
    api_.TfLiteInterpreterOptionsSetNumThreads(options_, options.threads ? *options.threads : -1);
    api_.TfLiteInterpreterOptionsSetErrorReporter(options_, collect, &errors_);
    const bool builtin = key == "xnnpack" || key == "cpu";
    if (key == "ref") {
      *reason = "the reference kernels (BUILTIN_REF) cannot be selected through the TensorFlow Lite C API";
      release_interpreter();
      return false;
    }
    if (key == "xnnpack") {
      if (!api_.has_xnnpack()) {
        *reason = "this TensorFlow Lite library does not export the XNNPACK delegate (TfLiteXNNPackDelegateCreate)";
        release_interpreter();
        return false;
      }
      tflite::XnnpackOptions xnn = api_.TfLiteXNNPackDelegateOptionsDefault();
      if (options.threads) xnn.num_threads = *options.threads;
      xnnpack_ = api_.TfLiteXNNPackDelegateCreate(&xnn);
      if (!xnnpack_) {
        *reason = "TfLiteXNNPackDelegateCreate failed";
        release_interpreter();
        return false;
      }
      if (timer_) OpTimer::clear_per_operator_profiling(xnnpack_);
      api_.TfLiteInterpreterOptionsAddDelegate(options_, xnnpack_);
    } else if (key != "cpu") {
      std::vector<const char*> keys, values;
      for (const auto& option : options.delegate_options) {
        keys.push_back(option.first.c_str());
        values.push_back(option.second.c_str());
      }
      try {
        external_ = tflite::load_external_delegate(tflite_delegate_library(candidate), keys.data(), values.data(),
                                                   keys.size());
      } catch (const std::exception& error) {
        *reason = error.what();
        release_interpreter();
        return false;
      }
      if (timer_) OpTimer::clear_per_operator_profiling(external_.delegate);
      api_.TfLiteInterpreterOptionsAddDelegate(options_, external_.delegate);
    }
    add_observer();
    if (timer_) api_.TfLiteInterpreterOptionsSetTelemetryProfiler(options_, timer_->profiler());
    errors_.clear();
    interpreter_ = api_.TfLiteInterpreterCreate(model_, options_);
    int status = interpreter_ ? api_.TfLiteInterpreterAllocateTensors(interpreter_) : tflite::kError;
    if (!interpreter_ || status != tflite::kOk) {
      const std::string message = errors_.empty() ? std::string("TfLiteInterpreterCreate failed") : errors_;
      release_interpreter();
      // The built-in kernels (with or without XNNPACK, which only takes the nodes it supports) failing means
      // the model is the problem; an external delegate failing means: try the next candidate.
      if (builtin) throw Error(kExitBadModel, model_error(message));
      *reason = first_line(message);
      return false;
    }
    return true;
  }

  void describe() {
    const int32_t n_in = api_.TfLiteInterpreterGetInputTensorCount(interpreter_);
    for (int32_t i = 0; i < n_in; ++i) {
      TensorSpec spec = spec_of(api_.TfLiteInterpreterGetInputTensor(interpreter_, i));
      if (api_.TfLiteInterpreterGetInputTensorIndex)
        spec.index = api_.TfLiteInterpreterGetInputTensorIndex(interpreter_, i);
      inputs.push_back(spec);
    }
    const int32_t n_out = api_.TfLiteInterpreterGetOutputTensorCount(interpreter_);
    for (int32_t i = 0; i < n_out; ++i) {
      TensorSpec spec = spec_of(api_.TfLiteInterpreterGetOutputTensor(interpreter_, i));
      if (api_.TfLiteInterpreterGetOutputTensorIndex)
        spec.index = api_.TfLiteInterpreterGetOutputTensorIndex(interpreter_, i);
      outputs.push_back(spec);
    }
  }

  TensorSpec spec_of(const tflite::Tensor* tensor) const {
    TensorSpec spec;
    const char* name = api_.TfLiteTensorName(tensor);
    spec.name = name ? name : "";
    std::string label;
    spec.dtype = to_dtype(api_.TfLiteTensorType(tensor), &label);
    spec.dtype_label = label.empty() ? dtype_name(spec.dtype) : label;
    std::vector<int64_t> dims = current_shape(tensor);
    if (api_.TfLiteTensorGetDimsSignature) {  // -1 marks the dimensions the model leaves dynamic
      const tflite::IntArray* signature = api_.TfLiteTensorGetDimsSignature(tensor);
      if (signature && static_cast<std::size_t>(signature->size) == dims.size())
        for (std::size_t d = 0; d < dims.size(); ++d) dims[d] = signature->data[d];
    }
    for (int64_t d : dims) spec.shape.push_back(d >= 0 ? Dim::of(d) : Dim::dynamic());
    const tflite::QuantizationParams q = api_.TfLiteTensorQuantizationParams(tensor);
    const char kind = dtype_kind(spec.dtype);
    if (q.scale != 0.0f && (kind == 'i' || kind == 'u')) {
      spec.scale = static_cast<double>(q.scale);
      spec.zero_point = q.zero_point;
    }
    return spec;
  }

  const tflite::Api& api_;
  int (*invoke_)(tflite::Interpreter*);
  OpTimer* timer_;
  std::string path_;
  RuntimeOptions options_given_;
  std::unique_ptr<GraphObserver> observer_;
  tflite::Model* model_ = nullptr;
  tflite::InterpreterOptions* options_ = nullptr;
  tflite::Interpreter* interpreter_ = nullptr;
  tflite::Delegate* xnnpack_ = nullptr;
  tflite::ExternalDelegate external_;
  std::string errors_;  // what the runtime reported (error reporter)
};

// --profile-ops: a second interpreter of the same model with the same delegate, the telemetry profiler set on it.
class TfliteOpProfiler final : public OpProfiler {
 public:
  TfliteOpProfiler(const tflite::Api& api, const std::string& path, RuntimeOptions options, const std::string& used,
                   const std::vector<Array>& feeds, int64_t runs)
      : session_(api, &timer_) {
    source = "tflite-telemetry-profiler";
    options.delegates = {used};  // exactly what the measured session ran on
    session_.load(path, options);
    session_.bind(feeds);
    const Graph* graph = session_.graph();
    timer_.reserve(graph ? graph->nodes.size() : 0, static_cast<std::size_t>(runs));
  }

  void run() override {
    timer_.begin_run();
    session_.run();
  }

  Json collect(int64_t runs) override {
    const Graph* graph = session_.graph();
    if (!graph) throw Error(kExitInferenceFailed, "the profiled interpreter's graph is unknown: " +
                                                      session_.graph_unknown());
    const std::string label = delegate_label(session_.backend.used.front());
    const std::string kernels = label == "cpu" || label == "ref" ? label : "cpu";
    std::vector<OpTimer::Times> timed = timer_.last_runs(static_cast<std::size_t>(runs));
    std::vector<NodeTimes> nodes;
    for (int index : graph->plan) {  // execution order
      for (auto& times : timed) {
        if (times.index != index) continue;
        const GraphNode& node = graph->nodes[static_cast<std::size_t>(index)];
        nodes.push_back({node.name, times.op, node.delegate_kernel() ? label : kernels, std::move(times.duration_ns)});
      }
    }
    return node_times_json(nodes);
  }

 private:
  OpTimer timer_;  // before session_: the interpreter holds a pointer to its profiler
  TfliteSession session_;
};

std::unique_ptr<OpProfiler> TfliteSession::op_profiler(const std::vector<Array>& feeds, int64_t runs,
                                                       std::string* unavailable) {
  if (!api_.TfLiteInterpreterOptionsSetTelemetryProfiler) {
    *unavailable = "this TensorFlow Lite library does not export TfLiteInterpreterOptionsSetTelemetryProfiler";
    return nullptr;
  }
  if (!graph()) {  // the profiler reports node indices: without the graph they name nothing
    *unavailable = "the per-op profile names nodes from the graph, which is unknown: " + graph_unknown();
    return nullptr;
  }
  return std::make_unique<TfliteOpProfiler>(api_, path_, options_given_, backend.used.front(), feeds, runs);
}

}  // namespace

bool is_library_path(const std::string& name) {
  return name.find('/') != std::string::npos || ends_with(name, ".so") || name.find(".so.") != std::string::npos ||
         ends_with(name, ".dylib") || ends_with(name, ".dll");
}

std::string tflite_delegate_library(const std::string& name) {
  const char* library = external_library(to_lower(name));
  if (library) return library;
  return is_library_path(name) ? name : "";
}

std::unique_ptr<Session> load_tflite(const std::string& model, const RuntimeOptions& options) {
  const tflite::Api& api = tflite::load_api(options.tflite_library);
  auto session = std::make_unique<TfliteSession>(api);
  session->load(model, options);
  return session;
}

}  // namespace eb

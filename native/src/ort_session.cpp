// ONNX Runtime sessions: the execution provider chain, tensor specs, binding and running
// (agent/runtimes/ort.py's behaviour, through the C/C++ API).
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "ort_api.hpp"
#include "runtimes.hpp"

namespace eb {
namespace {

const char* const kCpu = "CPUExecutionProvider";

DType to_dtype(ONNXTensorElementDataType type, std::string* label) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return DType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return DType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return DType::kFloat64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return DType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return DType::kUInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return DType::kInt16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return DType::kUInt16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return DType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return DType::kUInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return DType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return DType::kUInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return DType::kBool;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: *label = "str"; return DType::kString;
    default: *label = "onnx-type-" + std::to_string(static_cast<int>(type)); return DType::kUnknown;
  }
}

ONNXTensorElementDataType to_onnx(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::kFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DType::kFloat64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    case DType::kInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DType::kUInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::kInt16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16;
    case DType::kUInt16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16;
    case DType::kInt32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DType::kUInt32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32;
    case DType::kInt64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DType::kUInt64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64;
    case DType::kBool: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
    default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
}

// ort._is_model_error: errors that no other provider would fix.
bool is_model_error(const Ort::Exception& error) {
  const OrtErrorCode code = error.GetOrtErrorCode();
  if (code == ORT_NO_SUCHFILE || code == ORT_INVALID_PROTOBUF || code == ORT_INVALID_GRAPH ||
      code == ORT_NOT_IMPLEMENTED || code == ORT_MODEL_LOADED)
    return true;
  const std::string message = error.what();
  for (const char* marker : {"INVALID_PROTOBUF", "INVALID_GRAPH", "NOT_IMPLEMENTED", "Load model", "FAIL : ",
                             "NO_SUCHFILE", "Protobuf parsing failed"})
    if (message.find(marker) != std::string::npos) return true;
  return false;
}

// Providers ORT's generic SessionOptionsAppendExecutionProvider accepts, by the name it expects there.
const char* generic_name(const std::string& provider) {
  if (provider == "QNNExecutionProvider") return "QNN";
  if (provider == "SNPEExecutionProvider") return "SNPE";
  if (provider == "OpenVINOExecutionProvider") return "OpenVINO";
  if (provider == "XnnpackExecutionProvider") return "XNNPACK";
  if (provider == "WebNNExecutionProvider") return "WEBNN";
  if (provider == "WebGpuExecutionProvider") return "WebGPU";
  if (provider == "AzureExecutionProvider") return "AZURE";
  if (provider == "JsExecutionProvider") return "JS";
  if (provider == "VitisAIExecutionProvider") return "VitisAI";
  if (provider == "CoreMLExecutionProvider") return "CoreML";
  return nullptr;
}

// A fresh prefix for each session's profile: ONNX Runtime names the file <prefix>_<date and time to the second>.json,
// so two sessions of one second with one prefix would write the same file.
std::string profile_prefix(const RuntimeOptions& options, const char* what) {
  static int count = 0;
  std::string dir = options.profile_dir;
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    dir = tmp && *tmp ? tmp : "/tmp";
  }
  return dir + "/edgebench-ort-" + std::to_string(getpid()) + "-" + std::to_string(++count) + "-" + what;
}

class OrtOpProfiler;

class OrtSession final : public Session {
 public:
  explicit OrtSession(const ort::Library& library) : library_(library) {}

  void load(const std::string& path, const RuntimeOptions& options) {
    path_ = path;
    options_given_ = options;
    env_ = Ort::Env(ORT_LOGGING_LEVEL_ERROR, "edgebench-native");
    std::vector<std::string> requested;
    for (const auto& name : options.providers) requested.push_back(ort::provider_name(name));
    if (requested.empty()) requested.push_back(kCpu);
    backend.module = "onnxruntime-c";
    backend.version = library_.version;
    backend.requested = requested;
    backend.threads = options.threads;
    backend.notes.push_back("ONNX Runtime C API " + std::to_string(ORT_API_VERSION) + " from " + library_.path);
    std::vector<std::string> available_list = Ort::GetAvailableProviders();
    std::set<std::string> available(available_list.begin(), available_list.end());
    std::vector<std::string> chain;
    for (const auto& provider : requested) {
      if (std::find(chain.begin(), chain.end(), provider) != chain.end()) continue;
      if (available.count(provider)) {
        chain.push_back(provider);
      } else {
        std::vector<std::string> sorted(available.begin(), available.end());
        backend.fallbacks.push_back({provider, "not in this onnxruntime build (available: " + join(sorted, ", ") + ")"});
      }
    }
    if (std::find(chain.begin(), chain.end(), kCpu) == chain.end()) chain.push_back(kCpu);
    while (true) {
      std::vector<std::string> appended;
      Ort::SessionOptions session_options = make_options(options, chain, &appended, "");
      try {
        session_ = Ort::Session(env_, path.c_str(), session_options);
        backend.used = appended;
        break;
      } catch (const Ort::Exception& error) {
        const std::string message = first_line(error.what());
        if (appended.size() > 1 && !is_model_error(error)) {
          backend.fallbacks.push_back({appended.front(), message});
          chain.erase(std::find(chain.begin(), chain.end(), appended.front()));
          continue;
        }
        throw Error(kExitBadModel, "ONNX Runtime cannot load the model: " + message);
      }
    }
    describe();
  }

  void bind(const std::vector<Array>& feeds) override {
    feeds_ = feeds;  // the session reads the inputs from these buffers on every run
    values_.clear();
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    for (std::size_t i = 0; i < feeds_.size(); ++i) {
      Array& feed = feeds_[i];
      const ONNXTensorElementDataType type = to_onnx(feed.dtype);
      if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED)
        throw Error(kExitBadInput, "input '" + inputs[i].name + "' has a dtype the harness cannot feed");
      values_.push_back(Ort::Value::CreateTensor(memory, feed.data.empty() ? nullptr : feed.data.data(),
                                                 feed.data.size(), feed.shape.data(), feed.shape.size(), type));
    }
  }

  void run() override {
    try {
      results_ = session_.Run(run_options_, input_names_.data(), values_.data(), values_.size(),
                              output_names_.data(), output_names_.size());
    } catch (const Ort::Exception& error) {
      throw Error(kExitInferenceFailed, error.what());
    }
  }

  // ort.OrtSession.placement: one inference of a second, profiled session of the model (this one is never
  // profiled, so its runs carry no profiler cost); the executor reads each node's provider from the profile
  // (runtimes/ort_profile.py). Only with --profile-dir (the executor's temporary directory): a run of the
  // harness by hand leaves no files behind.
  Json placement() override;

  std::unique_ptr<OpProfiler> op_profiler(const std::vector<Array>& feeds, int64_t runs,
                                          std::string* unavailable) override;

  std::vector<Array> fetch_outputs() override {
    std::vector<Array> result;
    for (std::size_t i = 0; i < results_.size(); ++i) {
      Ort::Value& value = results_[i];
      if (!value.IsTensor())
        throw Error(kExitInferenceFailed, "output '" + outputs[i].name + "' is not a tensor; the harness cannot save it");
      auto info = value.GetTensorTypeAndShapeInfo();
      Array array;
      std::string label;
      array.dtype = to_dtype(info.GetElementType(), &label);
      if (dtype_size(array.dtype) == 0)
        throw Error(kExitInferenceFailed, "output '" + outputs[i].name + "' has dtype " + label +
                                              ", which the harness cannot save");
      array.shape = info.GetShape();
      array.data.resize(static_cast<std::size_t>(array.element_count()) * dtype_size(array.dtype));
      if (!array.data.empty()) std::memcpy(array.data.data(), value.GetTensorRawData(), array.data.size());
      result.push_back(std::move(array));
    }
    return result;
  }

 private:
  friend class OrtOpProfiler;

  Ort::SessionOptions make_options(const RuntimeOptions& options, std::vector<std::string>& chain,
                                   std::vector<std::string>* appended, const std::string& profile) {
    Ort::SessionOptions session_options;
    session_options.SetLogSeverityLevel(3);  // errors only
    if (!profile.empty()) session_options.EnableProfiling(profile.c_str());
    session_options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (options.threads) {
      session_options.SetIntraOpNumThreads(*options.threads);
      session_options.SetInterOpNumThreads(1);
    }
    std::vector<std::string> keys, values;
    for (const auto& option : options.delegate_options) {
      keys.push_back(option.first);
      values.push_back(option.second);
    }
    std::vector<std::string> kept;
    for (const auto& provider : chain) {
      if (provider == kCpu) {
        kept.push_back(provider);
        continue;
      }
      std::string failure;
      try {
        append(session_options, provider, keys, values);
      } catch (const Ort::Exception& error) {
        failure = first_line(error.what());
      } catch (const std::exception& error) {
        failure = error.what();
      }
      if (failure.empty()) {
        kept.push_back(provider);
      } else {
        backend.fallbacks.push_back({provider, failure});
      }
    }
    chain = kept;
    *appended = kept;
    return session_options;
  }

  void append(Ort::SessionOptions& session_options, const std::string& provider, const std::vector<std::string>& keys,
              const std::vector<std::string>& values) {
    const OrtApi& api = *library_.api;
    std::vector<const char*> k, v;
    for (const auto& s : keys) k.push_back(s.c_str());
    for (const auto& s : values) v.push_back(s.c_str());
    if (provider == "CUDAExecutionProvider") {
      OrtCUDAProviderOptionsV2* cuda = nullptr;
      Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
      OrtStatus* status = api.UpdateCUDAProviderOptions(cuda, k.data(), v.data(), k.size());
      if (!status) status = api.SessionOptionsAppendExecutionProvider_CUDA_V2(session_options, cuda);
      api.ReleaseCUDAProviderOptions(cuda);
      Ort::ThrowOnError(status);
    } else if (provider == "TensorrtExecutionProvider") {
      OrtTensorRTProviderOptionsV2* trt = nullptr;
      Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&trt));
      OrtStatus* status = api.UpdateTensorRTProviderOptions(trt, k.data(), v.data(), k.size());
      if (!status) status = api.SessionOptionsAppendExecutionProvider_TensorRT_V2(session_options, trt);
      api.ReleaseTensorRTProviderOptions(trt);
      Ort::ThrowOnError(status);
    } else if (provider == "NnapiExecutionProvider") {
      // Android builds export the NNAPI factory outside the OrtApi table.
      using AppendNnapi = OrtStatus* (*)(OrtSessionOptions*, uint32_t);
      auto append_nnapi = reinterpret_cast<AppendNnapi>(dlsym(library_.handle,
                                                              "OrtSessionOptionsAppendExecutionProvider_Nnapi"));
      if (!append_nnapi) throw std::runtime_error("this onnxruntime library does not export the NNAPI provider factory");
      Ort::ThrowOnError(append_nnapi(session_options, 0));
    } else if (const char* name = generic_name(provider)) {
      Ort::ThrowOnError(api.SessionOptionsAppendExecutionProvider(session_options, name, k.data(), v.data(), k.size()));
    } else {
      throw std::runtime_error("the native harness cannot configure " + provider +
                               " through the ONNX Runtime C API yet (no generic entry point for it)");
    }
  }

  TensorSpec spec_of(const std::string& name, const Ort::TypeInfo& type) const {
    TensorSpec spec;
    spec.name = name;
    if (type.GetONNXType() != ONNX_TYPE_TENSOR) {
      throw Error(kExitBadModel, "tensor '" + name + "' is not a tensor (ONNX type " +
                                     std::to_string(static_cast<int>(type.GetONNXType())) +
                                     "), which edgebench cannot feed");
    }
    auto info = type.GetTensorTypeAndShapeInfo();
    std::string label;
    spec.dtype = to_dtype(info.GetElementType(), &label);
    spec.dtype_label = label.empty() ? dtype_name(spec.dtype) : label;
    if (spec.dtype == DType::kUnknown)
      throw Error(kExitBadModel, "tensor '" + name + "' has type " + label + ", which edgebench cannot feed");
    const std::vector<int64_t> dims = info.GetShape();
    std::vector<const char*> symbols(dims.size(), nullptr);
    if (!dims.empty()) info.GetSymbolicDimensions(symbols.data(), symbols.size());
    for (std::size_t d = 0; d < dims.size(); ++d) {
      if (dims[d] >= 0)
        spec.shape.push_back(Dim::of(dims[d]));
      else
        spec.shape.push_back(Dim::dynamic(symbols[d] ? symbols[d] : ""));
    }
    return spec;
  }

  void describe() {
    Ort::AllocatorWithDefaultOptions allocator;
    for (std::size_t i = 0; i < session_.GetInputCount(); ++i) {
      input_name_storage_.push_back(session_.GetInputNameAllocated(i, allocator).get());
      inputs.push_back(spec_of(input_name_storage_.back(), session_.GetInputTypeInfo(i)));
    }
    for (std::size_t i = 0; i < session_.GetOutputCount(); ++i) {
      output_name_storage_.push_back(session_.GetOutputNameAllocated(i, allocator).get());
      // Outputs of non-tensor types are still run; they only cannot be described as tensors.
      try {
        outputs.push_back(spec_of(output_name_storage_.back(), session_.GetOutputTypeInfo(i)));
      } catch (const Error&) {
        TensorSpec spec;
        spec.name = output_name_storage_.back();
        spec.dtype = DType::kUnknown;
        spec.dtype_label = "non-tensor";
        outputs.push_back(spec);
      }
    }
    for (const auto& name : input_name_storage_) input_names_.push_back(name.c_str());
    for (const auto& name : output_name_storage_) output_names_.push_back(name.c_str());
  }

  const ort::Library& library_;
  std::string path_;
  RuntimeOptions options_given_;
  Ort::Env env_{nullptr};
  Ort::Session session_{nullptr};
  Ort::RunOptions run_options_{nullptr};
  std::vector<std::string> input_name_storage_, output_name_storage_;
  std::vector<const char*> input_names_, output_names_;
  std::vector<Array> feeds_;
  std::vector<Ort::Value> values_;
  std::vector<Ort::Value> results_;
};

// Placement and --profile-ops (ort.OrtOpProfiler): a second session of the model, on the providers the measured
// one was created with, recording ONNX Runtime's profile from its load; it runs on the measured session's input
// tensors. `what` names its profile file.
class OrtOpProfiler final : public OpProfiler {
 public:
  OrtOpProfiler(OrtSession& measured, const char* what) : measured_(measured) {
    source = "onnxruntime-profiler";
    std::vector<std::string> chain = measured.backend.used, appended;
    const std::size_t fallbacks = measured.backend.fallbacks.size();
    Ort::SessionOptions options = measured.make_options(measured.options_given_, chain, &appended,
                                                        profile_prefix(measured.options_given_, what));
    measured.backend.fallbacks.resize(fallbacks);  // the measured session's report, not this one's
    session_ = Ort::Session(measured.env_, measured.path_.c_str(), options);
  }

  void run() override {
    try {
      results_ = session_.Run(measured_.run_options_, measured_.input_names_.data(), measured_.values_.data(),
                              measured_.values_.size(), measured_.output_names_.data(),
                              measured_.output_names_.size());
    } catch (const Ort::Exception& error) {
      throw Error(kExitInferenceFailed, error.what());
    }
  }

  // The nodes are in the profile file, which the executor reads (runtimes/ort_profile.py: the last `runs` runs).
  Json collect(int64_t) override {
    Ort::AllocatorWithDefaultOptions allocator;
    profile_file = session_.EndProfilingAllocated(allocator).get();
    return Json::array();
  }

 private:
  OrtSession& measured_;
  Ort::Session session_{nullptr};
  std::vector<Ort::Value> results_;
};

std::unique_ptr<OpProfiler> OrtSession::op_profiler(const std::vector<Array>&, int64_t, std::string*) {
  try {
    return std::make_unique<OrtOpProfiler>(*this, "ops");
  } catch (const Ort::Exception& error) {
    throw Error(kExitInferenceFailed, std::string("ONNX Runtime cannot create the profiled session: ") + error.what());
  }
}

Json OrtSession::placement() {
  if (options_given_.profile_dir.empty()) {
    placement_note = "ONNX Runtime says where each node ran only in a profile: give --profile-dir";
    return Json();
  }
  try {
    OrtOpProfiler profiled(*this, "placement");
    profiled.run();
    profiled.collect(1);
    placement_file = profiled.profile_file;
  } catch (const Ort::Exception& error) {
    throw Error(kExitInferenceFailed, std::string("ONNX Runtime's profiled session: ") + error.what());
  }
  return Json();
}

}  // namespace

std::unique_ptr<Session> load_onnx(const std::string& model, const RuntimeOptions& options) {
  const ort::Library& library = ort::load_library(options.ort_library);
  auto session = std::make_unique<OrtSession>(library);
  try {
    session->load(model, options);
  } catch (const Ort::Exception& error) {
    throw Error(kExitBadModel, std::string("ONNX Runtime cannot load the model: ") + first_line(error.what()));
  }
  return session;
}

}  // namespace eb

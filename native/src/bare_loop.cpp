// edgebench-native-bare: the reference for bench/native_overhead.py. The plainest invoke loop on the runtime's
// own C API (no sessions, no protocol, no events): load, set inputs once, warm up (--warmup runs and
// --warmup-duration), then time each call with the same clock as the harness until both --runs and
// --min-duration are met. Prints one JSON object: {"format": ..., "runtime_version": ..., "latency_ns": [...]}.
// The same delegate defaults as the harness (TFLite: XNNPACK; ONNX Runtime: CPU, all graph optimisations), so
// the two measure the same work.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "inputs.hpp"
#include "json.hpp"
#include "runtimes.hpp"

#ifdef EDGEBENCH_WITH_ORT
#include "ort_api.hpp"
#endif
#ifdef EDGEBENCH_WITH_TFLITE
#include "tflite_api.hpp"
#endif

namespace {

struct Options {
  std::string model;
  std::vector<std::string> shapes;
  int threads = -1;
  bool xnnpack = true;
  int64_t runs = 400;
  double min_duration_s = 1.0;
  int64_t warmup = 20;
  double warmup_duration_s = 0.0;
  std::string tflite_library = eb::default_tflite_library();
  std::string ort_library = eb::default_ort_library();
};

template <class Call>
std::vector<int64_t> time_loop(Call&& call, const Options& options) {
  const int64_t warmup_until = eb::monotonic_ns() + static_cast<int64_t>(options.warmup_duration_s * 1e9);
  for (int64_t i = 0; i < options.warmup || eb::monotonic_ns() < warmup_until; ++i) call();
  std::vector<int64_t> latencies;
  latencies.reserve(static_cast<std::size_t>(options.runs) + 64);
  const int64_t min_ns = static_cast<int64_t>(options.min_duration_s * 1e9);
  const int64_t begin = eb::monotonic_ns();
  int64_t end = begin;
  while (static_cast<int64_t>(latencies.size()) < options.runs || end - begin < min_ns) {
    const int64_t t0 = eb::monotonic_ns();
    call();
    end = eb::monotonic_ns();
    latencies.push_back(end - t0);
  }
  return latencies;
}

eb::TensorSpec bare_spec(const std::string& name, eb::DType dtype) {
  eb::TensorSpec spec;
  spec.name = name;
  spec.dtype = dtype;
  spec.dtype_label = eb::dtype_name(dtype);
  return spec;
}

#ifdef EDGEBENCH_WITH_TFLITE
eb::DType tflite_dtype(int type) {
  switch (type) {
    case eb::tflite::kFloat32: return eb::DType::kFloat32;
    case eb::tflite::kUInt8: return eb::DType::kUInt8;
    case eb::tflite::kInt8: return eb::DType::kInt8;
    case eb::tflite::kInt16: return eb::DType::kInt16;
    case eb::tflite::kInt32: return eb::DType::kInt32;
    case eb::tflite::kInt64: return eb::DType::kInt64;
    case eb::tflite::kBool: return eb::DType::kBool;
    case eb::tflite::kFloat16: return eb::DType::kFloat16;
    default: throw eb::Error(eb::kExitBadInput, "the bare loop cannot generate TFLite type " + std::to_string(type));
  }
}

std::pair<std::string, std::vector<int64_t>> bare_tflite(const Options& options) {
  using namespace eb::tflite;
  const Api& api = load_api(options.tflite_library);
  Model* model = api.TfLiteModelCreateFromFile(options.model.c_str());
  if (!model) throw eb::Error(eb::kExitBadModel, "TfLiteModelCreateFromFile failed");
  InterpreterOptions* interpreter_options = api.TfLiteInterpreterOptionsCreate();
  api.TfLiteInterpreterOptionsSetNumThreads(interpreter_options, options.threads);
  Delegate* xnnpack = nullptr;
  if (options.xnnpack) {
    XnnpackOptions xnn = api.TfLiteXNNPackDelegateOptionsDefault();
    if (options.threads > 0) xnn.num_threads = options.threads;
    xnnpack = api.TfLiteXNNPackDelegateCreate(&xnn);
    api.TfLiteInterpreterOptionsAddDelegate(interpreter_options, xnnpack);
  }
  Interpreter* interpreter = api.TfLiteInterpreterCreate(model, interpreter_options);
  if (!interpreter) throw eb::Error(eb::kExitBadModel, "TfLiteInterpreterCreate failed");
  const eb::ShapeArgs shapes = eb::parse_shapes(options.shapes);
  const int32_t inputs = api.TfLiteInterpreterGetInputTensorCount(interpreter);
  for (int32_t i = 0; i < inputs; ++i) {
    const Tensor* tensor = api.TfLiteInterpreterGetInputTensor(interpreter, i);
    for (const auto& shape : shapes) {
      if (shape.first == api.TfLiteTensorName(tensor)) {
        std::vector<int> dims(shape.second.begin(), shape.second.end());
        api.TfLiteInterpreterResizeInputTensor(interpreter, i, dims.data(), static_cast<int32_t>(dims.size()));
      }
    }
  }
  if (api.TfLiteInterpreterAllocateTensors(interpreter) != kOk)
    throw eb::Error(eb::kExitBadModel, "TfLiteInterpreterAllocateTensors failed");
  eb::Rng rng(0);
  for (int32_t i = 0; i < inputs; ++i) {
    Tensor* tensor = api.TfLiteInterpreterGetInputTensor(interpreter, i);
    std::vector<int64_t> shape;
    for (int32_t d = 0; d < api.TfLiteTensorNumDims(tensor); ++d) shape.push_back(api.TfLiteTensorDim(tensor, d));
    const eb::Array data = eb::generate(bare_spec(api.TfLiteTensorName(tensor), tflite_dtype(api.TfLiteTensorType(tensor))),
                                        shape, rng);
    api.TfLiteTensorCopyFromBuffer(tensor, data.data.data(), data.data.size());
  }
  auto invoke = api.TfLiteInterpreterInvoke;
  auto latencies = time_loop([&] {
    if (invoke(interpreter) != kOk) throw eb::Error(eb::kExitInferenceFailed, "TfLiteInterpreterInvoke failed");
  }, options);
  const std::string version = api.TfLiteVersion();
  api.TfLiteInterpreterDelete(interpreter);
  if (xnnpack) api.TfLiteXNNPackDelegateDelete(xnnpack);
  api.TfLiteInterpreterOptionsDelete(interpreter_options);
  api.TfLiteModelDelete(model);
  return {version, latencies};
}
#endif

#ifdef EDGEBENCH_WITH_ORT
eb::DType onnx_dtype(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return eb::DType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return eb::DType::kUInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return eb::DType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return eb::DType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return eb::DType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return eb::DType::kBool;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return eb::DType::kFloat16;
    default: throw eb::Error(eb::kExitBadInput, "the bare loop cannot generate ONNX type " + std::to_string(type));
  }
}

std::pair<std::string, std::vector<int64_t>> bare_onnx(const Options& options) {
  const eb::ort::Library& library = eb::ort::load_library(options.ort_library);
  Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "edgebench-bare");
  Ort::SessionOptions session_options;
  session_options.SetLogSeverityLevel(3);
  session_options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  if (options.threads > 0) {
    session_options.SetIntraOpNumThreads(options.threads);
    session_options.SetInterOpNumThreads(1);
  }
  Ort::Session session(env, options.model.c_str(), session_options);
  const eb::ShapeArgs shapes = eb::parse_shapes(options.shapes);
  Ort::AllocatorWithDefaultOptions allocator;
  std::vector<std::string> input_names, output_names;
  std::vector<eb::Array> data;
  std::vector<Ort::Value> values;
  Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  eb::Rng rng(0);
  for (std::size_t i = 0; i < session.GetInputCount(); ++i) {
    input_names.push_back(session.GetInputNameAllocated(i, allocator).get());
    const Ort::TypeInfo type = session.GetInputTypeInfo(i);  // owns what `info` views
    auto info = type.GetTensorTypeAndShapeInfo();
    std::vector<int64_t> shape = info.GetShape();
    for (std::size_t d = 0; d < shape.size(); ++d)
      if (shape[d] < 0) shape[d] = 1;
    for (const auto& given : shapes)
      if (given.first == input_names.back()) shape = given.second;
    data.push_back(eb::generate(bare_spec(input_names.back(), onnx_dtype(info.GetElementType())), shape, rng));
  }
  for (std::size_t i = 0; i < data.size(); ++i) {
    const Ort::TypeInfo type = session.GetInputTypeInfo(i);
    values.push_back(Ort::Value::CreateTensor(memory, data[i].data.data(), data[i].data.size(), data[i].shape.data(),
                                              data[i].shape.size(), type.GetTensorTypeAndShapeInfo().GetElementType()));
  }
  for (std::size_t i = 0; i < session.GetOutputCount(); ++i)
    output_names.push_back(session.GetOutputNameAllocated(i, allocator).get());
  std::vector<const char*> in_names, out_names;
  for (const auto& name : input_names) in_names.push_back(name.c_str());
  for (const auto& name : output_names) out_names.push_back(name.c_str());
  Ort::RunOptions run_options{nullptr};
  std::vector<Ort::Value> outputs;
  auto latencies = time_loop([&] {
    outputs = session.Run(run_options, in_names.data(), values.data(), values.size(), out_names.data(),
                          out_names.size());
  }, options);
  return {library.version, latencies};
}
#endif

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw eb::Error(eb::kExitUsage, flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--shape") options.shapes.push_back(value());
    else if (flag == "--threads") options.threads = std::stoi(value());
    else if (flag == "--runs") options.runs = std::stoll(value());
    else if (flag == "--min-duration") options.min_duration_s = eb::parse_duration(value(), flag);
    else if (flag == "--warmup") options.warmup = std::stoll(value());
    else if (flag == "--warmup-duration") options.warmup_duration_s = eb::parse_duration(value(), flag);
    else if (flag == "--no-xnnpack") options.xnnpack = false;
    else if (flag == "--tflite-lib") options.tflite_library = value();
    else if (flag == "--ort-lib") options.ort_library = value();
    else if (flag == "--help" || flag == "-h") {
      std::cout << "usage: edgebench-native-bare MODEL [--shape NAME=DIMS] [--threads N] [--runs N] "
                   "[--min-duration S] [--warmup N] [--warmup-duration S] [--no-xnnpack] [--tflite-lib PATH] [--ort-lib PATH]\n";
      std::exit(0);
    } else if (!flag.empty() && flag[0] == '-') throw eb::Error(eb::kExitUsage, "unknown option " + flag);
    else options.model = flag;
  }
  if (options.model.empty()) throw eb::Error(eb::kExitUsage, "no MODEL given");
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse(argc, argv);
    const std::string format = eb::model_format(options.model);
    std::pair<std::string, std::vector<int64_t>> measured;
#ifdef EDGEBENCH_WITH_TFLITE
    if (format == "tflite") measured = bare_tflite(options);
#endif
#ifdef EDGEBENCH_WITH_ORT
    if (format == "onnx") measured = bare_onnx(options);
#endif
    if (measured.second.empty()) throw eb::Error(eb::kExitMissingLibrary, "built without the runtime for " + format);
    eb::Json out = eb::Json::object();
    out.set("format", format);
    out.set("runtime_version", measured.first);
    out.set("latency_ns", eb::Json::int_array(measured.second));
    std::cout << out.dump() << "\n";
    return 0;
  } catch (const eb::Error& error) {
    std::cerr << "edgebench-native-bare: error: " << error.what() << "\n";
    return error.code();
  } catch (const std::exception& error) {
    std::cerr << "edgebench-native-bare: error: " << error.what() << "\n";
    return 1;
  }
}

// Shared vocabulary of the native harness: errors with exit codes, dtypes, arrays, tensor specs, the clock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__linux__) || defined(__ANDROID__)
#include <time.h>
#else
#include <chrono>
#endif

namespace eb {

// Exit codes of edgebench-native (documented in docs/native.md and native/README.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,         // a bug: unexpected exception
  kExitUsage = 2,            // bad command line
  kExitBadModel = 3,         // missing, unreadable or unloadable model file, unsupported operator
  kExitBadInput = 4,         // --shape / --input / .npy that does not fit the model
  kExitMissingLibrary = 5,   // the runtime library cannot be loaded or lacks the C API
  kExitUnknownDelegate = 6,  // a delegate / execution provider name the harness does not know
  kExitNoBackend = 7,        // every delegate / provider in the chain failed
  kExitInferenceFailed = 8,  // the runtime failed while running
};

// The edgebench error class each exit code becomes on the Python side (agent/errors.py ERROR_KINDS).
const char* error_kind(int code);
// A short stable name for each exit code ("bad_model", ...), carried in the error event.
const char* error_code_name(int code);

class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// ------------------------------------------------------------------------------------------------- dtypes
enum class DType { kFloat16, kFloat32, kFloat64, kInt8, kUInt8, kInt16, kUInt16, kInt32, kUInt32, kInt64,
                   kUInt64, kBool, kString, kUnknown };

const char* dtype_name(DType dtype);        // numpy names: "float32", "uint8", "bool", "str", ...
DType dtype_from_name(const std::string& name);
std::size_t dtype_size(DType dtype);        // bytes per element (0 for str / unknown)
char dtype_kind(DType dtype);               // numpy kinds: 'f', 'i', 'u', 'b', 'U' (str), '?' (unknown)

uint16_t float_to_half(float value);
float half_to_float(uint16_t bits);

// A dense, C-ordered array: the inputs fed and the outputs fetched.
struct Array {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // element_count() * dtype_size(dtype) bytes

  int64_t element_count() const;
  std::size_t byte_size() const { return data.size(); }
};

int64_t element_count(const std::vector<int64_t>& shape);

// One dimension of a model's tensor: a fixed size, or dynamic (with its symbolic name when the model has one).
struct Dim {
  int64_t value = -1;  // >= 0: fixed
  std::string symbol;  // dynamic dimension's name ("" if unnamed)
  bool fixed() const { return value >= 0; }
  static Dim of(int64_t v) { return Dim{v, ""}; }
  static Dim dynamic(const std::string& name = "") { return Dim{-1, name}; }
};

// What a model says about one input or output (agent/tensors.py TensorSpec).
struct TensorSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  std::string dtype_label;  // the dtype's name; differs from dtype_name() only for types edgebench cannot feed
  std::vector<Dim> shape;
  std::optional<double> scale;
  std::optional<int64_t> zero_point;
  std::optional<int64_t> index;  // TFLite tensor index (TensorSpec.extra["index"])
};

// "1x3x224x224", "scalar", "?" / the symbolic name for dynamic dimensions (inputs.format_shape).
std::string format_shape(const std::vector<Dim>& shape);
std::string format_shape(const std::vector<int64_t>& shape);

// ----------------------------------------------------------------------------------------------- the clock
// CLOCK_MONOTONIC, the clock Python's time.perf_counter_ns() reads on Linux, so a sample's timestamp and the
// parent's RSS and sensor samples share one time axis.
inline int64_t monotonic_ns() {
#if defined(__linux__) || defined(__ANDROID__)
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
#else
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
#endif
}

// The first non-empty line of a message (runtimes report multi-line errors; the harness reports one line).
std::string first_line(const std::string& text);
std::string join(const std::vector<std::string>& items, const std::string& separator);
std::string to_lower(std::string text);
bool ends_with(const std::string& text, const std::string& suffix);
bool starts_with(const std::string& text, const std::string& prefix);
std::string format_g(double value);  // printf("%g"): what Python's f"{value:g}" gives

}  // namespace eb

#include "common.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace eb {

const char* error_kind(int code) {
  switch (code) {
    case kExitUsage: return "UsageError";
    case kExitBadModel: return "ModelError";
    case kExitBadInput: return "InputError";
    case kExitMissingLibrary: return "RuntimeUnavailable";
    case kExitUnknownDelegate: return "UsageError";
    case kExitNoBackend: return "RuntimeUnavailable";
    case kExitInferenceFailed: return "InferenceError";
    default: return "EdgebenchError";
  }
}

const char* error_code_name(int code) {
  switch (code) {
    case kExitOk: return "ok";
    case kExitUsage: return "usage";
    case kExitBadModel: return "bad_model";
    case kExitBadInput: return "bad_input";
    case kExitMissingLibrary: return "missing_library";
    case kExitUnknownDelegate: return "unknown_delegate";
    case kExitNoBackend: return "no_backend";
    case kExitInferenceFailed: return "inference_failed";
    default: return "internal";
  }
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "float16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt16: return "int16";
    case DType::kUInt16: return "uint16";
    case DType::kInt32: return "int32";
    case DType::kUInt32: return "uint32";
    case DType::kInt64: return "int64";
    case DType::kUInt64: return "uint64";
    case DType::kBool: return "bool";
    case DType::kString: return "str";
    default: return "unknown";
  }
}

DType dtype_from_name(const std::string& name) {
  static const DType all[] = {DType::kFloat16, DType::kFloat32, DType::kFloat64, DType::kInt8, DType::kUInt8,
                              DType::kInt16,   DType::kUInt16,  DType::kInt32,   DType::kUInt32, DType::kInt64,
                              DType::kUInt64,  DType::kBool,    DType::kString};
  for (DType d : all)
    if (name == dtype_name(d)) return d;
  return DType::kUnknown;
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kInt8: case DType::kUInt8: case DType::kBool: return 1;
    case DType::kFloat16: case DType::kInt16: case DType::kUInt16: return 2;
    case DType::kFloat32: case DType::kInt32: case DType::kUInt32: return 4;
    case DType::kFloat64: case DType::kInt64: case DType::kUInt64: return 8;
    default: return 0;
  }
}

char dtype_kind(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: case DType::kFloat32: case DType::kFloat64: return 'f';
    case DType::kInt8: case DType::kInt16: case DType::kInt32: case DType::kInt64: return 'i';
    case DType::kUInt8: case DType::kUInt16: case DType::kUInt32: case DType::kUInt64: return 'u';
    case DType::kBool: return 'b';
    case DType::kString: return 'U';
    default: return '?';
  }
}

// IEEE 754 binary16 conversions with round-to-nearest-even, subnormals, infinities and NaN.
uint16_t float_to_half(float value) {
  uint32_t f;
  std::memcpy(&f, &value, sizeof f);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t abs = f & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: infinity
  if (abs < 0x38800000u) {                                                // a half subnormal (or zero)
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);            // below half the smallest subnormal
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // value = M * 2^(exponent - 150); in units of 2^-24: M >> shift
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = ((abs - 0x38000000u) >> 13);  // rebias exponent 127 -> 15, drop 13 mantissa bits
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

float half_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t f;
  if (exponent == 0x1f) {
    f = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent == 0) {
    if (mantissa == 0) {
      f = sign;
    } else {  // subnormal: normalise
      exponent = 113;
      while (!(mantissa & 0x400u)) {
        mantissa <<= 1;
        --exponent;
      }
      f = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else {
    f = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &f, sizeof value);
  return value;
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

int64_t Array::element_count() const { return eb::element_count(shape); }

std::string format_shape(const std::vector<Dim>& shape) {
  if (shape.empty()) return "scalar";
  std::string out;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += "x";
    if (shape[i].fixed())
      out += std::to_string(shape[i].value);
    else
      out += shape[i].symbol.empty() ? "?" : shape[i].symbol;
  }
  return out;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::vector<Dim> dims;
  for (int64_t d : shape) dims.push_back(Dim::of(d));
  return format_shape(dims);
}

std::string first_line(const std::string& text) {
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    const auto first = line.find_first_not_of(" \t\r");
    if (first != std::string::npos) {
      const auto last = line.find_last_not_of(" \t\r");
      return line.substr(first, last - first + 1);
    }
    start = end + 1;
  }
  return "";
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += separator;
    out += items[i];
  }
  return out;
}

std::string to_lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

std::string format_g(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%g", value);
  return buffer;
}

}  // namespace eb

#include "npy.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace eb {
namespace {

const char kMagic[] = "\x93NUMPY";

Error bad(const std::string& what, const std::string& why) {
  return Error(kExitBadInput, what + " is not a readable .npy file (" + why + ")");
}

// The value of `key` in the header's dict literal: "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }".
std::string header_value(const std::string& header, const std::string& key, const std::string& what) {
  std::size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) at = header.find("\"" + key + "\"");
  if (at == std::string::npos) throw bad(what, "header has no " + key);
  at = header.find(':', at);
  if (at == std::string::npos) throw bad(what, "malformed header");
  ++at;
  while (at < header.size() && header[at] == ' ') ++at;
  if (at >= header.size()) throw bad(what, "malformed header");
  char open = header[at];
  if (open == '\'' || open == '"') {
    const std::size_t end = header.find(open, at + 1);
    if (end == std::string::npos) throw bad(what, "malformed header");
    return header.substr(at + 1, end - at - 1);
  }
  if (open == '(') {
    const std::size_t end = header.find(')', at);
    if (end == std::string::npos) throw bad(what, "malformed header");
    return header.substr(at, end - at + 1);
  }
  std::size_t end = header.find_first_of(",}", at);
  if (end == std::string::npos) end = header.size();
  std::string value = header.substr(at, end - at);
  while (!value.empty() && value.back() == ' ') value.pop_back();
  return value;
}

std::vector<int64_t> parse_tuple(const std::string& text, const std::string& what) {
  std::vector<int64_t> shape;
  std::string inner = text.substr(1, text.size() - 2);  // strip ( )
  std::stringstream stream(inner);
  std::string item;
  while (std::getline(stream, item, ',')) {
    const auto first = item.find_first_not_of(" L");
    if (first == std::string::npos) continue;  // "(3,)" leaves an empty item
    const auto last = item.find_last_not_of(" L");
    const std::string digits = item.substr(first, last - first + 1);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
      throw bad(what, "bad shape " + text);
    shape.push_back(std::stoll(digits));
  }
  return shape;
}

template <class T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

template <class T>
void store(uint8_t* p, T value) {
  std::memcpy(p, &value, sizeof value);
}

}  // namespace

std::string npy_descr(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "<f2";
    case DType::kFloat32: return "<f4";
    case DType::kFloat64: return "<f8";
    case DType::kInt8: return "|i1";
    case DType::kUInt8: return "|u1";
    case DType::kInt16: return "<i2";
    case DType::kUInt16: return "<u2";
    case DType::kInt32: return "<i4";
    case DType::kUInt32: return "<u4";
    case DType::kInt64: return "<i8";
    case DType::kUInt64: return "<u8";
    case DType::kBool: return "|b1";
    default: return "";
  }
}

DType parse_npy_descr(const std::string& descr, bool* big_endian) {
  if (descr.size() < 3) return DType::kUnknown;
  const char order = descr[0];
  if (order != '<' && order != '>' && order != '|' && order != '=') return DType::kUnknown;
  const std::string code = descr.substr(1);
  static const std::pair<const char*, DType> table[] = {
      {"f2", DType::kFloat16}, {"f4", DType::kFloat32}, {"f8", DType::kFloat64}, {"i1", DType::kInt8},
      {"u1", DType::kUInt8},   {"i2", DType::kInt16},   {"u2", DType::kUInt16},  {"i4", DType::kInt32},
      {"u4", DType::kUInt32},  {"i8", DType::kInt64},   {"u8", DType::kUInt64},  {"b1", DType::kBool}};
  for (const auto& entry : table) {
    if (code == entry.first) {
      if (big_endian) *big_endian = order == '>' && dtype_size(entry.second) > 1;
      return entry.second;
    }
  }
  return DType::kUnknown;
}

Array parse_npy(const std::string& bytes, const std::string& what) {
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0) throw bad(what, "no .npy magic");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad(what, "truncated header");
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    offset = 12;
  } else {
    throw bad(what, "unsupported .npy version " + std::to_string(major));
  }
  if (bytes.size() < offset + header_len) throw bad(what, "truncated header");
  const std::string header = bytes.substr(offset, header_len);
  const std::string descr = header_value(header, "descr", what);
  bool big_endian = false;
  Array array;
  array.dtype = parse_npy_descr(descr, &big_endian);
  if (array.dtype == DType::kUnknown) throw bad(what, "unsupported dtype " + descr);
  array.shape = parse_tuple(header_value(header, "shape", what), what);
  const bool fortran = header_value(header, "fortran_order", what) == "True";
  if (fortran && array.shape.size() > 1) throw bad(what, "Fortran-ordered arrays are not supported; save it C-ordered");
  const std::size_t need = static_cast<std::size_t>(array.element_count()) * dtype_size(array.dtype);
  const std::size_t data_at = offset + header_len;
  if (bytes.size() - data_at < need)
    throw bad(what, "truncated data: " + std::to_string(bytes.size() - data_at) + " of " + std::to_string(need) +
                        " bytes");
  array.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(data_at),
                    bytes.begin() + static_cast<std::ptrdiff_t>(data_at + need));
  if (big_endian) {
    const std::size_t width = dtype_size(array.dtype);
    for (std::size_t i = 0; i < array.data.size(); i += width)
      std::reverse(array.data.begin() + static_cast<std::ptrdiff_t>(i),
                   array.data.begin() + static_cast<std::ptrdiff_t>(i + width));
  }
  return array;
}

Array read_npy(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(kExitBadInput, "file not found: " + path);
  std::ostringstream content;
  content << file.rdbuf();
  return parse_npy(content.str(), path);
}

std::string npy_bytes(const Array& array) {
  std::string shape = "(";
  for (std::size_t i = 0; i < array.shape.size(); ++i) shape += std::to_string(array.shape[i]) + ", ";
  if (array.shape.size() > 1) shape.resize(shape.size() - 2);
  else if (array.shape.size() == 1) shape.resize(shape.size() - 1);  // "(3,)"
  shape += ")";
  std::string header = "{'descr': '" + npy_descr(array.dtype) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');  // data starts on a 64-byte boundary, as numpy writes it
  header += '\n';
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(reinterpret_cast<const char*>(array.data.data()), array.data.size());
  return out;
}

void write_npy(const std::string& path, const Array& array) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  const std::string bytes = npy_bytes(array);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!file) throw Error(kExitInternal, "cannot write " + path);
}

bool can_cast_same_kind(DType from, DType to) {
  if (from == to) return true;
  const char a = dtype_kind(from), b = dtype_kind(to);
  if (a == '?' || b == '?' || a == 'U' || b == 'U') return false;
  if (a == 'b') return true;
  if (a == 'u') return b == 'u' || b == 'i' || b == 'f';
  if (a == 'i') return b == 'i' || b == 'f';
  if (a == 'f') return b == 'f';
  return false;
}

Array cast_array(const Array& array, DType to) {
  if (array.dtype == to) return array;
  Array out;
  out.dtype = to;
  out.shape = array.shape;
  const std::size_t n = static_cast<std::size_t>(array.element_count());
  const std::size_t in_width = dtype_size(array.dtype), out_width = dtype_size(to);
  out.data.resize(n * out_width);
  const char from_kind = dtype_kind(array.dtype);
  for (std::size_t i = 0; i < n; ++i) {
    const uint8_t* src = array.data.data() + i * in_width;
    uint8_t* dst = out.data.data() + i * out_width;
    double real = 0.0;
    int64_t whole = 0;
    uint64_t unsigned_whole = 0;
    const bool is_float = from_kind == 'f';
    switch (array.dtype) {
      case DType::kFloat16: real = half_to_float(load<uint16_t>(src)); break;
      case DType::kFloat32: real = load<float>(src); break;
      case DType::kFloat64: real = load<double>(src); break;
      case DType::kInt8: whole = load<int8_t>(src); break;
      case DType::kUInt8: whole = load<uint8_t>(src); break;
      case DType::kInt16: whole = load<int16_t>(src); break;
      case DType::kUInt16: whole = load<uint16_t>(src); break;
      case DType::kInt32: whole = load<int32_t>(src); break;
      case DType::kUInt32: whole = load<uint32_t>(src); break;
      case DType::kInt64: whole = load<int64_t>(src); break;
      case DType::kUInt64: unsigned_whole = load<uint64_t>(src); whole = static_cast<int64_t>(unsigned_whole); break;
      case DType::kBool: whole = load<uint8_t>(src) ? 1 : 0; break;
      default: throw Error(kExitInternal, "cast from an unsupported dtype");
    }
    if (!is_float) real = array.dtype == DType::kUInt64 ? static_cast<double>(unsigned_whole) : static_cast<double>(whole);
    switch (to) {
      case DType::kFloat16: store<uint16_t>(dst, float_to_half(static_cast<float>(real))); break;
      case DType::kFloat32: store<float>(dst, static_cast<float>(real)); break;
      case DType::kFloat64: store<double>(dst, real); break;
      case DType::kInt8: store<int8_t>(dst, static_cast<int8_t>(is_float ? static_cast<int64_t>(real) : whole)); break;
      case DType::kUInt8: store<uint8_t>(dst, static_cast<uint8_t>(is_float ? static_cast<int64_t>(real) : whole)); break;
      case DType::kInt16: store<int16_t>(dst, static_cast<int16_t>(is_float ? static_cast<int64_t>(real) : whole)); break;
      case DType::kUInt16: store<uint16_t>(dst, static_cast<uint16_t>(is_float ? static_cast<int64_t>(real) : whole)); break;
      case DType::kInt32: store<int32_t>(dst, static_cast<int32_t>(is_float ? static_cast<int64_t>(real) : whole)); break;
      case DType::kUInt32: store<uint32_t>(dst, static_cast<uint32_t>(is_float ? static_cast<int64_t>(real) : whole)); break;
      case DType::kInt64: store<int64_t>(dst, is_float ? static_cast<int64_t>(real) : whole); break;
      case DType::kUInt64: store<uint64_t>(dst, is_float ? static_cast<uint64_t>(real) : static_cast<uint64_t>(whole)); break;
      case DType::kBool: store<uint8_t>(dst, (is_float ? real != 0.0 : whole != 0) ? 1 : 0); break;
      default: throw Error(kExitInternal, "cast to an unsupported dtype");
    }
  }
  return out;
}

}  // namespace eb

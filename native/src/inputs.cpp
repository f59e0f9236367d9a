#include "inputs.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>

#include "npy.hpp"

namespace eb {
namespace {

std::pair<std::string, std::string> split_assignment(const std::string& text, const std::string& flag) {
  const std::size_t at = text.rfind('=');
  if (at == std::string::npos || at + 1 == text.size())
    throw Error(kExitUsage, flag + " '" + text + "': expected NAME=VALUE");
  return {text.substr(0, at), text.substr(at + 1)};
}

bool parse_double(const std::string& text, double* value) {
  if (text.empty()) return false;
  const char* begin = text.c_str();
  char* end = nullptr;
  const double parsed = std::strtod(begin, &end);
  while (*end == ' ') ++end;
  if (end == begin || *end != '\0') return false;
  // Python's float() accepts "inf"/"nan" too; so does strtod. Hex floats ("0x1p3") are not Python floats.
  if (text.find('x') != std::string::npos || text.find('X') != std::string::npos) return false;
  *value = parsed;
  return true;
}

template <class T>
void put(uint8_t* p, T value) {
  std::memcpy(p, &value, sizeof value);
}

void store_whole(DType dtype, uint8_t* p, int64_t value) {
  switch (dtype) {
    case DType::kInt8: put<int8_t>(p, static_cast<int8_t>(value)); break;
    case DType::kUInt8: put<uint8_t>(p, static_cast<uint8_t>(value)); break;
    case DType::kInt16: put<int16_t>(p, static_cast<int16_t>(value)); break;
    case DType::kUInt16: put<uint16_t>(p, static_cast<uint16_t>(value)); break;
    case DType::kInt32: put<int32_t>(p, static_cast<int32_t>(value)); break;
    case DType::kUInt32: put<uint32_t>(p, static_cast<uint32_t>(value)); break;
    case DType::kInt64: put<int64_t>(p, value); break;
    case DType::kUInt64: put<uint64_t>(p, static_cast<uint64_t>(value)); break;
    case DType::kBool: put<uint8_t>(p, value ? 1 : 0); break;
    default: break;
  }
}

void store_real(DType dtype, uint8_t* p, double value) {
  switch (dtype) {
    case DType::kFloat16: put<uint16_t>(p, float_to_half(static_cast<float>(value))); break;
    case DType::kFloat32: put<float>(p, static_cast<float>(value)); break;
    case DType::kFloat64: put<double>(p, value); break;
    default: store_whole(dtype, p, std::isfinite(value) ? static_cast<int64_t>(value) : 0); break;
  }
}

Array empty_array(DType dtype, const Shape& shape) {
  Array array;
  array.dtype = dtype;
  array.shape = shape;
  array.data.assign(static_cast<std::size_t>(element_count(shape)) * dtype_size(dtype), 0);
  return array;
}

void check_feedable(const TensorSpec& spec) {
  if (dtype_kind(spec.dtype) == 'U' || spec.dtype == DType::kUnknown)
    throw Error(kExitBadInput, "input '" + spec.name + "' has dtype " + spec.dtype_label +
                                   ": give its data with --input " + spec.name + "=file.npy");
}

std::string model_names(const std::vector<TensorSpec>& specs) {
  std::vector<std::string> names;
  for (const auto& spec : specs) names.push_back(spec.name);
  std::sort(names.begin(), names.end());
  return join(names, ", ");
}

template <class Args>
void check_names(const Args& overrides, const std::vector<TensorSpec>& specs, const std::string& flag) {
  for (const auto& item : overrides) {
    if (item.first.empty()) continue;
    const bool known = std::any_of(specs.begin(), specs.end(), [&](const TensorSpec& s) { return s.name == item.first; });
    if (!known)
      throw Error(kExitBadInput, flag + " names input '" + item.first + "', but the model's inputs are: " +
                                     model_names(specs));
  }
}

template <class Args, class Value>
const Value* lookup(const Args& args, const std::string& name) {
  const Value* found = nullptr;
  for (const auto& item : args)
    if (item.first == name) found = &item.second;  // the last one given wins, as in a dict
  return found;
}

}  // namespace

std::string InputSource::describe() const {
  if (kind == "file") return "file:" + file;
  if (kind == "value") return "value:" + format_g(value);
  return kind;
}

ShapeArgs parse_shapes(const std::vector<std::string>& items) {
  ShapeArgs shapes;
  for (const auto& item : items) {
    const auto parts = split_assignment(item, "--shape");
    const std::string text = to_lower(parts.second);
    Shape dims;
    if (text != "scalar" && text != "()") {
      std::string normalised = text;
      std::replace(normalised.begin(), normalised.end(), ',', 'x');
      std::size_t start = 0;
      while (true) {
        const std::size_t end = normalised.find('x', start);
        std::string part = normalised.substr(start, end == std::string::npos ? std::string::npos : end - start);
        // int() accepts surrounding spaces and a sign
        const auto first = part.find_first_not_of(' '), last = part.find_last_not_of(' ');
        part = first == std::string::npos ? "" : part.substr(first, last - first + 1);
        std::size_t digits_at = (!part.empty() && (part[0] == '-' || part[0] == '+')) ? 1 : 0;
        if (part.size() == digits_at || part.find_first_not_of("0123456789", digits_at) != std::string::npos)
          throw Error(kExitUsage, "--shape '" + item + "': dimensions must be integers like 1x3x224x224");
        const long long value = std::stoll(part);
        if (value < 0) throw Error(kExitUsage, "--shape '" + item + "': dimensions cannot be negative");
        dims.push_back(value);
        if (end == std::string::npos) break;
        start = end + 1;
      }
    }
    shapes.emplace_back(parts.first, dims);
  }
  return shapes;
}

SourceArgs parse_sources(const std::vector<std::string>& items) {
  SourceArgs sources;
  for (const auto& item : items) {
    const std::size_t at = item.rfind('=');
    std::string name, value;
    if (at == std::string::npos) {
      value = item;
    } else {
      name = item.substr(0, at);
      value = item.substr(at + 1);
    }
    InputSource source;
    double number = 0;
    if (value == "zeros" || value == "ones" || value == "random") {
      source.kind = value;
    } else if (parse_double(value, &number)) {
      source.kind = "value";
      source.value = number;
    } else {
      source.kind = "file";
      source.file = value;
    }
    sources.emplace_back(name, source);
  }
  return sources;
}

double parse_duration(const std::string& text, const std::string& flag) {
  static const std::pair<const char*, double> units[] = {{"ms", 1e-3}, {"min", 60.0}, {"s", 1.0}, {"m", 60.0},
                                                          {"h", 3600.0}};
  std::string number = text;
  double scale = 1.0;
  for (const auto& unit : units) {
    if (ends_with(number, unit.first)) {
      number.resize(number.size() - std::strlen(unit.first));
      scale = unit.second;
      break;
    }
  }
  double value = 0;
  if (!parse_double(number, &value) || value < 0 || !std::isfinite(value))
    throw Error(kExitUsage, flag + " '" + text + "' is not a duration (examples: 10, 2.5s, 500ms, 10m)");
  return value * scale;
}

// ------------------------------------------------------------------------------------------------------ Rng
namespace {
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t state = seed;
  for (auto& word : s_) word = splitmix64(state);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

int64_t Rng::integer(int64_t low, int64_t high) {
  const uint64_t span = static_cast<uint64_t>(high - low);
  // Lemire's nearly-divisionless method would be faster; a rejection loop is exact and simple.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % span;
  uint64_t draw;
  do {
    draw = next();
  } while (draw >= limit);
  return low + static_cast<int64_t>(draw % span);
}

// ------------------------------------------------------------------------------------------------- shapes
Shape resolve_shape(const TensorSpec& spec, const std::optional<Shape>& override_shape) {
  if (override_shape) {
    if (override_shape->size() != spec.shape.size())
      throw Error(kExitBadInput, "--shape " + spec.name + "=" + format_shape(*override_shape) + " has " +
                                     std::to_string(override_shape->size()) + " dimensions, the model's input has " +
                                     std::to_string(spec.shape.size()) + " (" + format_shape(spec.shape) + ")");
    return *override_shape;
  }
  Shape shape;
  for (std::size_t axis = 0; axis < spec.shape.size(); ++axis) {
    const Dim& dim = spec.shape[axis];
    if (dim.fixed()) {
      shape.push_back(dim.value);
    } else if (axis == 0) {
      shape.push_back(1);
    } else {
      std::string example;
      for (std::size_t i = 0; i < spec.shape.size(); ++i) {
        if (i) example += "x";
        example += spec.shape[i].fixed() ? std::to_string(spec.shape[i].value) : (i == 0 ? "1" : "N");
      }
      const std::string label = dim.symbol.empty() ? "" : " ('" + dim.symbol + "')";
      throw Error(kExitBadInput, "input '" + spec.name + "' has a dynamic dimension " + std::to_string(axis) + label +
                                     " in shape " + format_shape(spec.shape) + ": give it with --shape " + spec.name +
                                     "=" + example);
    }
  }
  return shape;
}

bool shape_fits(const Shape& shape, const std::vector<Dim>& model_shape) {
  if (shape.size() != model_shape.size()) return false;
  for (std::size_t i = 0; i < shape.size(); ++i)
    if (model_shape[i].fixed() && model_shape[i].value != shape[i]) return false;
  return true;
}

Array generate(const TensorSpec& spec, const Shape& shape, Rng& rng, const std::string& kind) {
  check_feedable(spec);
  if (kind == "zeros") return filled(spec, shape, 0.0);
  if (kind == "ones") return filled(spec, shape, 1.0);
  Array array = empty_array(spec.dtype, shape);
  const std::size_t n = static_cast<std::size_t>(array.element_count());
  const std::size_t width = dtype_size(spec.dtype);
  uint8_t* p = array.data.data();
  const char kind_char = dtype_kind(spec.dtype);
  for (std::size_t i = 0; i < n; ++i, p += width) {
    if (kind_char == 'f') {
      store_real(spec.dtype, p, rng.uniform());
    } else if (kind_char == 'b') {
      store_whole(spec.dtype, p, rng.integer(0, 2));
    } else if (width == 1) {  // the full 8-bit range: for quantized inputs, exactly the calibrated real range
      store_whole(spec.dtype, p, kind_char == 'i' ? rng.integer(-128, 128) : rng.integer(0, 256));
    } else {  // wider integers are usually indices or lengths
      store_whole(spec.dtype, p, rng.integer(0, 10));
    }
  }
  return array;
}

Array filled(const TensorSpec& spec, const Shape& shape, double value) {
  check_feedable(spec);
  Array array = empty_array(spec.dtype, shape);
  const std::size_t width = dtype_size(spec.dtype);
  if (array.data.empty()) return array;
  store_real(spec.dtype, array.data.data(), value);
  for (std::size_t at = width; at < array.data.size(); at += width)
    std::memcpy(array.data.data() + at, array.data.data(), width);
  return array;
}

Array load_npy_input(const std::string& path, const TensorSpec& spec) {
  Array array;
  try {
    array = read_npy(path);
  } catch (const Error& error) {
    throw Error(kExitBadInput, "input '" + spec.name + "': " + error.what());
  }
  if (array.dtype != spec.dtype) {
    if (!can_cast_same_kind(array.dtype, spec.dtype))
      throw Error(kExitBadInput, "input '" + spec.name + "': " + path + " has dtype " + dtype_name(array.dtype) +
                                     ", the model expects " + spec.dtype_label);
    array = cast_array(array, spec.dtype);
  }
  if (!shape_fits(array.shape, spec.shape))
    throw Error(kExitBadInput, "input '" + spec.name + "': " + path + " has shape " + format_shape(array.shape) +
                                   ", the model expects " + format_shape(spec.shape));
  return array;
}

std::vector<Array> build_feeds(const std::vector<TensorSpec>& specs, const ShapeArgs& shapes,
                               const SourceArgs& given_sources, uint64_t seed) {
  check_names(shapes, specs, "--shape");
  SourceArgs sources = given_sources;
  const bool has_unnamed = std::any_of(sources.begin(), sources.end(), [](const auto& s) { return s.first.empty(); });
  if (has_unnamed) {
    if (specs.size() != 1) {
      std::vector<std::string> names;
      for (const auto& spec : specs) names.push_back(spec.name);
      throw Error(kExitBadInput, "--input without a NAME= works only for single-input models; this one has " +
                                     std::to_string(specs.size()) + ": " + join(names, ", "));
    }
    for (auto& source : sources)
      if (source.first.empty()) source.first = specs[0].name;
  }
  check_names(sources, specs, "--input");
  Rng rng(seed);
  std::vector<Array> feeds;
  for (const auto& spec : specs) {
    const InputSource* found = lookup<SourceArgs, InputSource>(sources, spec.name);
    const InputSource source = found ? *found : InputSource{};
    const Shape* override_shape = lookup<ShapeArgs, Shape>(shapes, spec.name);
    if (source.kind == "file") {
      Array array = load_npy_input(source.file, spec);
      if (override_shape && *override_shape != array.shape)
        throw Error(kExitBadInput, "input '" + spec.name + "': --shape " + format_shape(*override_shape) +
                                       " disagrees with " + source.file + " (" + format_shape(array.shape) + ")");
      feeds.push_back(std::move(array));
      continue;
    }
    const Shape shape = resolve_shape(spec, override_shape ? std::optional<Shape>(*override_shape) : std::nullopt);
    if (source.kind == "value")
      feeds.push_back(filled(spec, shape, source.value));
    else
      feeds.push_back(generate(spec, shape, rng, source.kind));
  }
  return feeds;
}

Json describe_feeds(const std::vector<TensorSpec>& specs, const std::vector<Array>& feeds,
                    const SourceArgs& sources) {
  Json list = Json::array();
  for (std::size_t i = 0; i < specs.size() && i < feeds.size(); ++i) {
    const InputSource* found = lookup<SourceArgs, InputSource>(sources, specs[i].name);
    if (!found && specs.size() == 1) found = lookup<SourceArgs, InputSource>(sources, "");
    Json item = Json::object();
    item.set("name", specs[i].name);
    item.set("dtype", dtype_name(feeds[i].dtype));
    Json shape = Json::array();
    for (int64_t d : feeds[i].shape) shape.push(Json(static_cast<long long>(d)));
    item.set("shape", shape);
    item.set("source", found ? found->describe() : std::string("random"));
    list.push(item);
  }
  return list;
}

Json spec_to_json(const TensorSpec& spec) {
  Json item = Json::object();
  item.set("name", spec.name);
  item.set("dtype", spec.dtype_label.empty() ? std::string(dtype_name(spec.dtype)) : spec.dtype_label);
  Json shape = Json::array();
  for (const Dim& dim : spec.shape) {
    if (dim.fixed())
      shape.push(Json(static_cast<long long>(dim.value)));
    else if (!dim.symbol.empty())
      shape.push(Json(dim.symbol));
    else
      shape.push(Json());
  }
  item.set("shape", shape);
  item.set("scale", spec.scale ? Json(*spec.scale) : Json());
  item.set("zero_point", spec.zero_point ? Json(static_cast<long long>(*spec.zero_point)) : Json());
  if (spec.index) {
    Json extra = Json::object();
    extra.set("index", Json(static_cast<long long>(*spec.index)));
    item.set("extra", extra);
  }
  return item;
}

}  // namespace eb

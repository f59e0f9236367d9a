// Input tensors for a run, with agent/inputs.py's rules: shapes from the model plus --shape overrides (a
// dynamic leading dimension defaults to 1, any other must be given), data generated to fit the dtype (floats
// uniform in [0, 1), 8-bit integers over their full range, wider integers in [0, 10), bools 0/1) or taken
// from .npy files, literal values, zeros or ones.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "json.hpp"

namespace eb {

using Shape = std::vector<int64_t>;

struct InputSource {
  std::string kind = "random";  // "file", "value", "zeros", "ones", "random"
  std::string file;
  double value = 0.0;
  std::string describe() const;  // "random", "value:16000", "file:PATH" (InputSource.describe)
};

// Parsed --shape and --input flags, in the order given (names as written; "" = the only input).
using ShapeArgs = std::vector<std::pair<std::string, Shape>>;
using SourceArgs = std::vector<std::pair<std::string, InputSource>>;

ShapeArgs parse_shapes(const std::vector<std::string>& items);    // throws Error(kExitUsage)
SourceArgs parse_sources(const std::vector<std::string>& items);  // never throws: anything else is a file

// xoshiro256** seeded through splitmix64: fast, portable, the same stream on every platform and compiler.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();                       // [0, 1) with 53 random bits
  int64_t integer(int64_t low, int64_t high);  // [low, high)

 private:
  uint64_t s_[4];
};

Shape resolve_shape(const TensorSpec& spec, const std::optional<Shape>& override_shape);
bool shape_fits(const Shape& shape, const std::vector<Dim>& model_shape);
Array generate(const TensorSpec& spec, const Shape& shape, Rng& rng, const std::string& kind = "random");
Array filled(const TensorSpec& spec, const Shape& shape, double value);
Array load_npy_input(const std::string& path, const TensorSpec& spec);

// One array per model input, in the model's order; throws Error(kExitBadInput) on misfits.
std::vector<Array> build_feeds(const std::vector<TensorSpec>& specs, const ShapeArgs& shapes,
                               const SourceArgs& sources, uint64_t seed);
// inputs.describe_feeds: [{"name", "dtype", "shape", "source"}].
Json describe_feeds(const std::vector<TensorSpec>& specs, const std::vector<Array>& feeds, const SourceArgs& sources);
// TensorSpec.to_dict.
Json spec_to_json(const TensorSpec& spec);

// "10", "2.5s", "500ms", "10m" -> seconds (the CLI's duration syntax); throws Error(kExitUsage).
double parse_duration(const std::string& text, const std::string& flag);

}  // namespace eb

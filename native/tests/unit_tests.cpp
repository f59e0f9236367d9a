// Unit tests of the harness's runtime-independent parts: JSON, float16, .npy, casting, argument parsing,
// input generation, the protocol loop with fake callables and a fake session, format sniffing, memory, events.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <string>

#include "check.hpp"
#include "cli.hpp"
#include "common.hpp"
#include "harness.hpp"
#include "inputs.hpp"
#include "json.hpp"
#include "memory.hpp"
#include "npy.hpp"
#include "placement.hpp"
#include "protocol.hpp"
#include "runtimes.hpp"
#ifdef EDGEBENCH_WITH_TFLITE
#include <thread>

#include "tflite_graph.hpp"
#endif

using namespace eb;

namespace {

std::string temp_dir() {
  static std::string dir;
  if (dir.empty()) {
    char pattern[] = "/tmp/edgebench-native-test-XXXXXX";
    const char* made = mkdtemp(pattern);
    dir = made ? made : "/tmp";
  }
  return dir;
}

std::string write_file(const std::string& name, const std::string& bytes) {
  const std::string path = temp_dir() + "/" + name;
  std::ofstream file(path, std::ios::binary);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

void busy_wait_ns(int64_t ns) {
  const int64_t until = monotonic_ns() + ns;
  while (monotonic_ns() < until) {
  }
}

TensorSpec spec(const std::string& name, DType dtype, std::vector<Dim> shape) {
  TensorSpec s;
  s.name = name;
  s.dtype = dtype;
  s.dtype_label = dtype_name(dtype);
  s.shape = std::move(shape);
  return s;
}

template <class T>
T element(const Array& array, std::size_t i) {
  T value;
  std::memcpy(&value, array.data.data() + i * sizeof(T), sizeof(T));
  return value;
}

template <class T>
Array make_array(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  Array array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.resize(values.size() * sizeof(T));
  std::memcpy(array.data.data(), values.data(), array.data.size());
  return array;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------ JSON
TEST(json_writes_nested_documents_in_insertion_order) {
  Json doc = Json::object();
  doc.set("b", 1);
  doc.set("a", Json::array());
  Json list = Json::array();
  list.push(Json());
  list.push(true);
  list.push(2.5);
  list.push("x");
  doc.set("list", list);
  doc.set("b", 7);  // replaces, keeps its position
  CHECK_EQ(doc.dump(), std::string(R"({"b": 7, "a": [], "list": [null, true, 2.5, "x"]})"));
}

TEST(json_escapes_strings_and_writes_exact_numbers) {
  CHECK_EQ(Json("a\"b\\c\n\t\x01").dump(), std::string(R"("a\"b\\c\n\t\u0001")"));
  CHECK_EQ(Json("µs ✓").dump(), std::string("\"µs ✓\""));
  CHECK_EQ(Json(0.1).dump(), std::string("0.1"));
  CHECK_EQ(Json(1.0).dump(), std::string("1.0"));
  CHECK_EQ(Json(std::nan("")).dump(), std::string("null"));
  CHECK_EQ(Json(std::numeric_limits<double>::infinity()).dump(), std::string("null"));
  CHECK_EQ(Json(static_cast<long long>(9007199254740993LL)).dump(), std::string("9007199254740993"));
  CHECK_EQ(std::strtod(json_double(1.0 / 3.0).c_str(), nullptr), 1.0 / 3.0);
  CHECK_EQ(Json::int_array({1, -2, 3000000000LL}).dump(), std::string("[1,-2,3000000000]"));
  CHECK_EQ(Json::int_array({}).dump(), std::string("[]"));
}

// --------------------------------------------------------------------------------------------------- float16
TEST(float16_conversions_round_to_nearest_even) {
  CHECK_EQ(float_to_half(1.0f), 0x3c00);
  CHECK_EQ(float_to_half(-2.0f), 0xc000);
  CHECK_EQ(float_to_half(65504.0f), 0x7bff);
  CHECK_EQ(float_to_half(65520.0f), 0x7c00);                 // rounds up to infinity
  CHECK_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);    // smallest subnormal
  CHECK_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);    // a tie: to even (zero)
  CHECK_EQ(float_to_half(std::ldexp(3.0f, -25)), 0x0002);    // 1.5 ulp: a tie, to even (2)
  CHECK_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie between 1 and 1+2^-10: even
  CHECK_EQ(float_to_half(std::nanf("")) & 0x7e00, 0x7e00);
  for (float value : {0.0f, 0.5f, 0.333251953125f, 1024.0f, -3.140625f, 6.103515625e-05f, 5.9604644775390625e-08f})
    CHECK_EQ(half_to_float(float_to_half(value)), value);
  for (uint32_t bits = 0; bits < 0x7c00; bits += 7)  // every 7th finite positive half survives the round trip
    CHECK_EQ(float_to_half(half_to_float(static_cast<uint16_t>(bits))), bits);
}

// ------------------------------------------------------------------------------------------------------ .npy
TEST(npy_round_trips_every_dtype_and_rank) {
  const Array floats = make_array<float>(DType::kFloat32, {2, 3}, {0.f, 1.5f, -2.f, 3.25f, 4.f, 5.f});
  const Array parsed = parse_npy(npy_bytes(floats), "floats");
  CHECK(parsed.dtype == DType::kFloat32);
  CHECK(parsed.shape == floats.shape);
  CHECK(parsed.data == floats.data);
  CHECK_EQ(npy_bytes(floats).find('\n') + 1, static_cast<std::size_t>(128));  // data 64-byte aligned (+ magic)
  const Array vector = make_array<int64_t>(DType::kInt64, {3}, {1, -2, 3});
  CHECK(npy_bytes(vector).find("'shape': (3,)") != std::string::npos);
  CHECK(parse_npy(npy_bytes(vector), "v").data == vector.data);
  const Array scalar = make_array<int64_t>(DType::kInt64, {}, {16000});
  CHECK(npy_bytes(scalar).find("'shape': ()") != std::string::npos);
  const Array back = parse_npy(npy_bytes(scalar), "s");
  CHECK(back.shape.empty());
  CHECK_EQ(element<int64_t>(back, 0), 16000);
  for (DType dtype : {DType::kFloat16, DType::kFloat64, DType::kInt8, DType::kUInt8, DType::kInt16, DType::kUInt16,
                      DType::kInt32, DType::kUInt32, DType::kUInt64, DType::kBool}) {
    Array array;
    array.dtype = dtype;
    array.shape = {2, 2};
    array.data.assign(4 * dtype_size(dtype), 1);
    const Array again = parse_npy(npy_bytes(array), dtype_name(dtype));
    CHECK(again.dtype == dtype);
    CHECK(again.data == array.data);
  }
  const std::string path = temp_dir() + "/floats.npy";
  write_npy(path, floats);
  CHECK(read_npy(path).data == floats.data);
}

TEST(npy_reads_version_2_and_big_endian_files) {
  std::string header = "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }";
  header += std::string(64 - (12 + header.size() + 1) % 64, ' ') + "\n";
  std::string bytes("\x93NUMPY\x02\x00", 8);
  const uint32_t len = static_cast<uint32_t>(header.size());
  bytes += std::string(reinterpret_cast<const char*>(&len), 4);  // little-endian host assumed (x86, arm)
  bytes += header;
  bytes += std::string("\x00\x00\x01\x00\xff\xff\xff\xfe", 8);  // 256, -2 big-endian
  const Array array = parse_npy(bytes, "v2");
  CHECK(array.dtype == DType::kInt32);
  CHECK_EQ(element<int32_t>(array, 0), 256);
  CHECK_EQ(element<int32_t>(array, 1), -2);
}

TEST(npy_rejects_what_it_cannot_read) {
  CHECK_ERROR(parse_npy("not numpy at all", "junk"), kExitBadInput, "no .npy magic");
  const Array floats = make_array<float>(DType::kFloat32, {4}, {1, 2, 3, 4});
  std::string truncated = npy_bytes(floats);
  truncated.resize(truncated.size() - 3);
  CHECK_ERROR(parse_npy(truncated, "t"), kExitBadInput, "truncated data");
  std::string complex_file = npy_bytes(floats);
  complex_file.replace(complex_file.find("<f4"), 3, "<c8");
  CHECK_ERROR(parse_npy(complex_file, "c"), kExitBadInput, "unsupported dtype <c8");
  std::string fortran = npy_bytes(make_array<float>(DType::kFloat32, {2, 2}, {1, 2, 3, 4}));
  fortran.replace(fortran.find("False"), 5, "True ");
  CHECK_ERROR(parse_npy(fortran, "f"), kExitBadInput, "Fortran");
  CHECK_ERROR(read_npy(temp_dir() + "/missing.npy"), kExitBadInput, "file not found");
}

TEST(casts_follow_numpy_same_kind) {
  CHECK(can_cast_same_kind(DType::kFloat64, DType::kFloat32));
  CHECK(can_cast_same_kind(DType::kUInt8, DType::kInt8));
  CHECK(can_cast_same_kind(DType::kBool, DType::kFloat32));
  CHECK(can_cast_same_kind(DType::kInt64, DType::kFloat16));
  CHECK(!can_cast_same_kind(DType::kInt8, DType::kUInt8));
  CHECK(!can_cast_same_kind(DType::kFloat32, DType::kInt64));
  CHECK(!can_cast_same_kind(DType::kFloat16, DType::kBool));
  const Array wide = make_array<double>(DType::kFloat64, {3}, {0.5, -1.25, 3.0});
  const Array narrow = cast_array(wide, DType::kFloat32);
  CHECK_EQ(element<float>(narrow, 1), -1.25f);
  const Array ints = cast_array(make_array<int64_t>(DType::kInt64, {2}, {7, -9}), DType::kInt32);
  CHECK_EQ(element<int32_t>(ints, 1), -9);
  const Array half = cast_array(make_array<float>(DType::kFloat32, {1}, {0.5f}), DType::kFloat16);
  CHECK_EQ(element<uint16_t>(half, 0), 0x3800);
}

// --------------------------------------------------------------------------------------------- argument parsing
TEST(shapes_parse_like_the_cli) {
  const ShapeArgs shapes = parse_shapes({"x=1x3x224x224", "sr=scalar", "y=2,3", "a=b=4"});
  CHECK_EQ(shapes.size(), static_cast<std::size_t>(4));
  CHECK(shapes[0].first == "x" && shapes[0].second == Shape({1, 3, 224, 224}));
  CHECK(shapes[1].first == "sr" && shapes[1].second.empty());
  CHECK(shapes[2].second == Shape({2, 3}));
  CHECK(shapes[3].first == "a=b" && shapes[3].second == Shape({4}));
  CHECK_ERROR(parse_shapes({"x="}), kExitUsage, "expected NAME=VALUE");
  CHECK_ERROR(parse_shapes({"x=1xa"}), kExitUsage, "dimensions must be integers");
  CHECK_ERROR(parse_shapes({"x=1x-3"}), kExitUsage, "cannot be negative");
}

TEST(sources_parse_like_the_cli) {
  const SourceArgs sources = parse_sources({"a=data.npy", "sr=16000", "s=zeros", "lonely.npy", "k=1e3"});
  CHECK(sources[0].first == "a" && sources[0].second.kind == "file" && sources[0].second.file == "data.npy");
  CHECK(sources[1].second.kind == "value" && sources[1].second.value == 16000.0);
  CHECK_EQ(sources[1].second.describe(), std::string("value:16000"));
  CHECK(sources[2].second.kind == "zeros");
  CHECK(sources[3].first.empty() && sources[3].second.kind == "file");
  CHECK_EQ(sources[3].second.describe(), std::string("file:lonely.npy"));
  CHECK_EQ(sources[4].second.value, 1000.0);
  CHECK_EQ(InputSource{}.describe(), std::string("random"));
}

TEST(durations_parse_like_the_cli) {
  CHECK_EQ(parse_duration("10", "--d"), 10.0);
  CHECK_EQ(parse_duration("2.5s", "--d"), 2.5);
  CHECK_EQ(parse_duration("500ms", "--d"), 0.5);
  CHECK_EQ(parse_duration("10m", "--d"), 600.0);
  CHECK_EQ(parse_duration("1min", "--d"), 60.0);
  CHECK_EQ(parse_duration("1h", "--d"), 3600.0);
  CHECK_EQ(parse_duration("1e-05", "--d"), 1e-05);
  CHECK_ERROR(parse_duration("soon", "--min-duration"), kExitUsage, "is not a duration");
  CHECK_ERROR(parse_duration("-1", "--min-duration"), kExitUsage, "is not a duration");
}

TEST(command_line_parses_flags_and_rejects_mistakes) {
  const CommandLine cl = parse_command_line(
      {"model.tflite", "--threads", "2", "--delegate=gpu, xnnpack", "--delegate-option", "k=v=w", "--min-runs", "10",
       "--min-duration", "250ms", "--max-duration=5", "--warmup-runs", "0", "--warmup-duration", "0", "--shape",
       "x=1x2", "--input", "x=zeros", "--seed", "7", "--events-fd", "3", "--providers", "cuda,cpu",
       "--tflite-lib", "/opt/libtensorflowlite_c.so", "--profile-runs", "20", "--profile-dir", "/tmp/p"});
  CHECK_EQ(cl.model, std::string("model.tflite"));
  CHECK(cl.runtime.threads && *cl.runtime.threads == 2);
  CHECK(cl.runtime.delegates == std::vector<std::string>({"gpu", "xnnpack"}));
  CHECK(cl.runtime.delegate_options.size() == 1 && cl.runtime.delegate_options[0].second == "v=w");
  CHECK(cl.runtime.providers == std::vector<std::string>({"cuda", "cpu"}));
  CHECK_EQ(cl.runtime.tflite_library, std::string("/opt/libtensorflowlite_c.so"));
  CHECK_EQ(cl.settings.min_runs, 10);
  CHECK_EQ(cl.settings.min_duration_s, 0.25);
  CHECK_EQ(cl.settings.max_duration_s, 5.0);
  CHECK_EQ(cl.settings.warmup_runs, 0);
  CHECK_EQ(cl.seed, static_cast<uint64_t>(7));
  CHECK_EQ(cl.events_fd, 3);
  CHECK(cl.shape_args.size() == 1 && cl.input_args.size() == 1);
  CHECK(cl.settings.profile_runs == 20 && cl.runtime.profile_dir == "/tmp/p");
  CHECK_EQ(parse_command_line({"m.tflite"}).settings.profile_runs, 0);
  CHECK_ERROR(parse_command_line({"m.tflite", "--profile-runs", "-1"}), kExitUsage, "not an integer >= 0");
  CHECK_ERROR(parse_command_line({"m.tflite", "--bogus"}), kExitUsage, "unknown option --bogus");
  CHECK_ERROR(parse_command_line({"m.tflite", "--threads"}), kExitUsage, "needs a value");
  CHECK_ERROR(parse_command_line({"m.tflite", "--threads", "0"}), kExitUsage, "not an integer >= 1");
  CHECK_ERROR(parse_command_line({}), kExitUsage, "no MODEL");
  CHECK_ERROR(parse_command_line({"a.tflite", "b.onnx"}), kExitUsage, "one MODEL at a time");
  CHECK_ERROR(parse_command_line({"m.tflite", "--format", "pt"}), kExitUsage, "tflite or onnx");
  CHECK(parse_command_line({"--help"}).help);
}

TEST(settings_validate_like_run_settings) {
  Settings settings;
  settings.validate();
  settings.max_duration_s = 0.5;
  CHECK_ERROR(settings.validate(), kExitUsage, "--max-duration (0.5s) is shorter than --min-duration (1s)");
  settings = Settings{};
  settings.min_runs = 0;
  CHECK_ERROR(settings.validate(), kExitUsage, "--min-runs must be at least 1");
}

// ---------------------------------------------------------------------------------------------------- inputs
TEST(shapes_resolve_with_the_python_rules) {
  const TensorSpec image = spec("x", DType::kFloat32, {Dim::dynamic("batch"), Dim::of(3), Dim::dynamic("?"),
                                                       Dim::dynamic()});
  CHECK(resolve_shape(image, Shape({2, 3, 48, 192})) == Shape({2, 3, 48, 192}));
  CHECK_ERROR(resolve_shape(image, std::nullopt), kExitBadInput,
              "input 'x' has a dynamic dimension 2 ('?') in shape batchx3x?x?: give it with --shape x=1x3xNxN");
  CHECK_ERROR(resolve_shape(image, Shape({1, 3})), kExitBadInput, "has 2 dimensions, the model's input has 4");
  const TensorSpec batch = spec("b", DType::kFloat32, {Dim::dynamic(), Dim::of(4)});
  CHECK(resolve_shape(batch, std::nullopt) == Shape({1, 4}));
  CHECK(shape_fits({7, 4}, batch.shape));
  CHECK(!shape_fits({7, 5}, batch.shape));
  CHECK(!shape_fits({4}, batch.shape));
}

TEST(generated_data_fits_each_dtype) {
  Rng rng(0);
  const Array floats = generate(spec("f", DType::kFloat32, {}), {10000}, rng);
  float lo = 1, hi = 0;
  for (std::size_t i = 0; i < 10000; ++i) {
    lo = std::min(lo, element<float>(floats, i));
    hi = std::max(hi, element<float>(floats, i));
  }
  CHECK(lo >= 0.0f && lo < 0.01f && hi < 1.0f && hi > 0.99f);
  const Array bytes = generate(spec("u", DType::kUInt8, {}), {10000}, rng);
  std::set<int> seen;
  for (std::size_t i = 0; i < 10000; ++i) seen.insert(element<uint8_t>(bytes, i));
  CHECK(seen.count(0) && seen.count(255) && seen.size() == 256);
  const Array signed_bytes = generate(spec("i", DType::kInt8, {}), {10000}, rng);
  std::set<int> seen_signed;
  for (std::size_t i = 0; i < 10000; ++i) seen_signed.insert(element<int8_t>(signed_bytes, i));
  CHECK(seen_signed.count(-128) && seen_signed.count(127) && seen_signed.size() == 256);
  const Array indices = generate(spec("n", DType::kInt64, {}), {1000}, rng);
  for (std::size_t i = 0; i < 1000; ++i) CHECK(element<int64_t>(indices, i) >= 0 && element<int64_t>(indices, i) < 10);
  const Array flags = generate(spec("b", DType::kBool, {}), {1000}, rng);
  for (std::size_t i = 0; i < 1000; ++i) CHECK(element<uint8_t>(flags, i) <= 1);
  const Array halves = generate(spec("h", DType::kFloat16, {}), {100}, rng);
  for (std::size_t i = 0; i < 100; ++i) {
    const float v = half_to_float(element<uint16_t>(halves, i));
    CHECK(v >= 0.0f && v <= 1.0f);
  }
  CHECK_ERROR(generate(spec("s", DType::kString, {}), {1}, rng), kExitBadInput, "give its data with --input s=file.npy");
  const Array ones = generate(spec("o", DType::kInt32, {}), {3}, rng, "ones");
  CHECK_EQ(element<int32_t>(ones, 2), 1);
  const Array rate = filled(spec("sr", DType::kInt64, {}), {}, 16000.0);
  CHECK(rate.shape.empty() && rate.data.size() == 8 && element<int64_t>(rate, 0) == 16000);
  Rng a(42), b(42), c(43);
  CHECK_EQ(a.next(), b.next());
  CHECK(Rng(42).next() != c.next());
}

TEST(feeds_are_built_from_files_values_and_generators) {
  const std::vector<TensorSpec> specs = {spec("input", DType::kFloat32, {Dim::dynamic(), Dim::dynamic()}),
                                         spec("sr", DType::kInt64, {})};
  const std::string audio = temp_dir() + "/audio.npy";
  write_npy(audio, make_array<double>(DType::kFloat64, {1, 3}, {0.25, 0.5, 0.75}));
  const SourceArgs sources = parse_sources({"input=" + audio, "sr=16000"});
  const std::vector<Array> feeds = build_feeds(specs, {}, sources, 0);
  CHECK(feeds[0].dtype == DType::kFloat32 && feeds[0].shape == Shape({1, 3}));
  CHECK_EQ(element<float>(feeds[0], 2), 0.75f);
  CHECK_EQ(element<int64_t>(feeds[1], 0), 16000);
  const Json described = describe_feeds(specs, feeds, sources);
  CHECK_EQ(described.dump(), std::string(R"([{"name": "input", "dtype": "float32", "shape": [1, 3], "source": "file:)") +
                                 audio + R"("}, {"name": "sr", "dtype": "int64", "shape": [], "source": "value:16000"}])");
  CHECK_ERROR(build_feeds(specs, parse_shapes({"nope=1"}), {}, 0), kExitBadInput,
              "--shape names input 'nope', but the model's inputs are: input, sr");
  CHECK_ERROR(build_feeds(specs, {}, parse_sources({"x.npy"}), 0), kExitBadInput,
              "--input without a NAME= works only for single-input models; this one has 2: input, sr");
  CHECK_ERROR(build_feeds(specs, parse_shapes({"input=1x4"}), sources, 0), kExitBadInput,
              "--shape 1x4 disagrees with");
  const std::vector<TensorSpec> ints = {spec("ids", DType::kInt8, {Dim::of(1), Dim::of(3)})};
  CHECK_ERROR(build_feeds(ints, {}, parse_sources({audio}), 0), kExitBadInput,
              "has dtype float64, the model expects int8");
  const std::vector<TensorSpec> four = {spec("v", DType::kFloat32, {Dim::of(1), Dim::of(4)})};
  CHECK_ERROR(build_feeds(four, {}, parse_sources({audio}), 0), kExitBadInput,
              "has shape 1x3, the model expects 1x4");
  const std::vector<Array> generated = build_feeds(four, {}, {}, 5);
  CHECK(generated[0].shape == Shape({1, 4}));
  CHECK(build_feeds(four, {}, {}, 5)[0].data == generated[0].data);  // the seed makes inputs reproducible
  CHECK(build_feeds(four, {}, {}, 6)[0].data != generated[0].data);
}

TEST(specs_serialise_like_tensor_spec_to_dict) {
  TensorSpec quantized = spec("images", DType::kUInt8, {Dim::of(1), Dim::dynamic("h"), Dim::dynamic()});
  quantized.scale = 0.5;
  quantized.zero_point = 131;
  quantized.index = 164;
  CHECK_EQ(spec_to_json(quantized).dump(),
           std::string(R"({"name": "images", "dtype": "uint8", "shape": [1, "h", null], "scale": 0.5, )"
                       R"("zero_point": 131, "extra": {"index": 164}})"));
  CHECK_EQ(spec_to_json(spec("x", DType::kFloat32, {})).dump(),
           std::string(R"({"name": "x", "dtype": "float32", "shape": [], "scale": null, "zero_point": null})"));
}

// -------------------------------------------------------------------------------------------------- protocol
TEST(run_loop_meets_the_minimum_run_count) {
  int calls = 0;
  const Phase phase = run_loop([&] { ++calls; }, 50, 0.0, 10.0, "measure", nullptr, 0.5);
  CHECK_EQ(calls, 50);
  CHECK_EQ(phase.latency_ns.size(), static_cast<std::size_t>(50));
  CHECK(phase.reached_min_runs && phase.reached_min_duration);
  for (std::size_t i = 1; i < phase.start_ns.size(); ++i)
    CHECK(phase.start_ns[i] >= phase.start_ns[i - 1] + phase.latency_ns[i - 1]);
}

TEST(run_loop_meets_the_minimum_duration) {
  const Phase phase = run_loop([] { busy_wait_ns(200000); }, 1, 0.02, 10.0, "measure", nullptr, 0.5);
  CHECK(phase.wall_ns >= 20000000);
  CHECK(!phase.latency_ns.empty() && phase.latency_ns.size() <= 101);  // fewer when this machine is busy
  for (int64_t latency : phase.latency_ns) CHECK(latency >= 200000);
  CHECK(phase.reached_min_runs && phase.reached_min_duration);
}

TEST(run_loop_stops_at_the_maximum_duration) {
  const Phase phase = run_loop([] { busy_wait_ns(1000000); }, 1000000, 0.0, 0.02, "measure", nullptr, 0.5);
  CHECK(!phase.reached_min_runs);
  CHECK(phase.wall_ns >= 20000000 && phase.wall_ns < 500000000);
  CHECK(!phase.latency_ns.empty() && phase.latency_ns.size() <= 21);
}

TEST(run_loop_reports_progress_at_the_interval) {
  std::vector<int64_t> runs;
  std::vector<double> elapsed;
  ProgressFn progress = [&](const char* phase, int64_t n, double seconds) {
    CHECK_EQ(std::string(phase), std::string("warmup"));
    runs.push_back(n);
    elapsed.push_back(seconds);
  };
  run_loop([] { busy_wait_ns(1000000); }, 1, 0.05, 10.0, "warmup", &progress, 0.01);
  CHECK(!runs.empty() && runs.size() <= 6);
  for (std::size_t i = 1; i < runs.size(); ++i) CHECK(runs[i] > runs[i - 1] && elapsed[i] > elapsed[i - 1]);
}

namespace {
class FakeSession : public Session {
 public:
  explicit FakeSession(int fail_on_call = -1) : fail_on_call_(fail_on_call) {
    inputs.push_back(spec("x", DType::kFloat32, {Dim::dynamic(), Dim::of(4)}));
    outputs.push_back(spec("y", DType::kFloat32, {Dim::dynamic(), Dim::of(4)}));
    backend.module = "fake";
    backend.version = "1";
    backend.requested = {"cpu"};
    backend.used = {"cpu"};
  }
  void bind(const std::vector<Array>& feeds) override { bound = feeds; }
  void run() override {
    ++calls;
    if (calls == fail_on_call_) throw Error(kExitInferenceFailed, "kernel exploded\nsecond line");
    busy_wait_ns(50000);
  }
  std::vector<Array> fetch_outputs() override { return bound; }
  std::vector<Array> bound;
  int calls = 0;

 private:
  int fail_on_call_;
};
}  // namespace

TEST(benchmark_runs_every_phase_with_a_fake_session) {
  Settings settings;
  settings.min_runs = 30;
  settings.min_duration_s = 0.01;
  settings.warmup_runs = 3;
  settings.warmup_duration_s = 0.005;
  FakeSession* fake = nullptr;
  std::vector<std::string> phases;
  ProgressFn progress = [&](const char* phase, int64_t, double) { phases.push_back(phase); };
  const int64_t before = monotonic_ns();
  BenchOutcome outcome = benchmark(
      [&] {
        auto session = std::make_unique<FakeSession>();
        fake = session.get();
        return std::unique_ptr<Session>(std::move(session));
      },
      [](Session& session) { return build_feeds(session.inputs, {}, {}, 0); }, settings, &progress,
      [&](const char* phase) { phases.push_back(std::string("phase:") + phase); });
  const int64_t after = monotonic_ns();
  CHECK(phases.size() >= 3 && phases[0] == "load" && phases[1] == "warmup");
  CHECK(std::find(phases.begin(), phases.end(), "phase:measure") != phases.end());
  CHECK(fake->bound.size() == 1 && fake->bound[0].shape == Shape({1, 4}));
  const Json& timing = outcome.timing;
  const int64_t warmup_runs = timing.find("warmup")->find("runs")->as_int();
  const Json& measured = *timing.find("measured");
  const int64_t measured_runs = measured.find("runs")->as_int();
  CHECK(warmup_runs >= 3);
  CHECK(measured_runs >= 30);
  CHECK_EQ(static_cast<int64_t>(fake->calls), 1 + warmup_runs + measured_runs);
  CHECK(measured.find("reached_min_runs")->as_bool() && measured.find("reached_min_duration")->as_bool());
  const int64_t origin = measured.find("origin_monotonic_ns")->as_int();
  CHECK(origin > before && origin < after);  // on this process's CLOCK_MONOTONIC
  CHECK(timing.find("first_inference_ms")->as_double() >= 0.05);
  CHECK(timing.find("load_ms")->as_double() >= 0.0);
  const std::string samples = outcome.samples.dump();
  CHECK(samples.find("\"start_offset_ns\": [0,") != std::string::npos);
  CHECK(outcome.wall_ns >= 10000000);
  const Json& memory = outcome.memory;
  CHECK(memory.find("rss_before_load_bytes")->kind() == Json::Kind::kInt);
  CHECK(memory.find("peak_load_bytes")->as_int() >= memory.find("rss_after_load_bytes")->as_int());
  const std::string method = memory.find("peak_method")->as_string();
  CHECK(method == "vmhwm" || method == "vmhwm-lifetime");
}

TEST(benchmark_names_the_phase_a_runtime_failed_in) {
  Settings settings;
  settings.min_runs = 5;
  settings.min_duration_s = 0.0;
  settings.warmup_runs = 5;
  settings.warmup_duration_s = 0.0;
  auto feeds = [](Session& session) { return build_feeds(session.inputs, {}, {}, 0); };
  for (const auto& expected : std::vector<std::pair<int, std::string>>{
           {1, "the first inference failed: kernel exploded"}, {3, "warm-up failed: kernel exploded"},
           {8, "the measured run failed: kernel exploded"}}) {
    CHECK_ERROR(benchmark([&] { return std::unique_ptr<Session>(new FakeSession(expected.first)); }, feeds, settings,
                          nullptr),
                kExitInferenceFailed, expected.second);
  }
}

namespace {
// A fake runtime's profiler: each profiled run takes 50 µs in node "a" and 30 µs in node "b".
class FakeProfiler : public OpProfiler {
 public:
  FakeProfiler() { source = "fake-profiler"; }
  void run() override { ++runs; }
  Json collect(int64_t last) override {
    std::vector<NodeTimes> nodes{{"a", "CONV_2D", "cpu", std::vector<int64_t>(static_cast<std::size_t>(last), 50000)},
                                 {"b", "SOFTMAX", "cpu", std::vector<int64_t>(static_cast<std::size_t>(last), 30000)}};
    return node_times_json(nodes);
  }
  int runs = 0;
};

class ProfiledSession : public FakeSession {
 public:
  std::unique_ptr<OpProfiler> op_profiler(const std::vector<Array>&, int64_t, std::string* why) override {
    if (!with_profiler) {
      *why = "no profiler here";
      return nullptr;
    }
    return std::make_unique<FakeProfiler>();
  }
  Json placement() override {
    ++placements;
    runs_before_placement = calls;
    return Json::object();
  }
  bool with_profiler = true;
  int placements = 0;
  int runs_before_placement = 0;
};
}  // namespace

TEST(benchmark_profiles_ops_after_the_measured_phase) {
  Settings settings;
  settings.min_runs = 5;
  settings.min_duration_s = 0.0;
  settings.warmup_runs = 1;
  settings.warmup_duration_s = 0.0;
  settings.profile_runs = 4;
  ProfiledSession* fake = nullptr;
  std::vector<std::string> phases;
  ProgressFn progress = [&](const char* phase, int64_t, double) { phases.push_back(phase); };
  auto load = [&] {
    auto session = std::make_unique<ProfiledSession>();
    fake = session.get();
    return std::unique_ptr<Session>(std::move(session));
  };
  auto feeds = [](Session& session) { return build_feeds(session.inputs, {}, {}, 0); };
  BenchOutcome outcome = benchmark(load, feeds, settings, &progress);
  CHECK_EQ(fake->placements, 1);
  CHECK_EQ(fake->runs_before_placement, fake->calls);  // after the measured phase (the profiler has its own runs)
  CHECK_EQ(static_cast<int64_t>(fake->calls), 1 + outcome.timing.find("warmup")->find("runs")->as_int() +
                                                   outcome.timing.find("measured")->find("runs")->as_int());
  CHECK(outcome.placement.kind() == Json::Kind::kObject);
  CHECK_EQ(phases.back(), std::string("profile"));
  CHECK_EQ(outcome.ops.find("source")->as_string(), std::string("fake-profiler"));
  const std::string latency = outcome.ops.find("latency_ns")->dump();
  CHECK_EQ(std::count(latency.begin(), latency.end(), ','), static_cast<std::ptrdiff_t>(3));  // 4 profiled runs
  const std::string dumped = outcome.ops.dump();
  CHECK(dumped.find(R"("duration_ns": [50000,50000,50000,50000])") != std::string::npos);
  CHECK(outcome.profile_files.size() == 0);
  settings.profile_runs = 0;
  CHECK(benchmark(load, feeds, settings, nullptr).ops.kind() == Json::Kind::kNull);
  settings.profile_runs = 2;
  auto bare = [&] {
    auto session = std::make_unique<ProfiledSession>();
    session->with_profiler = false;
    return std::unique_ptr<Session>(std::move(session));
  };
  CHECK_EQ(benchmark(bare, feeds, settings, nullptr).ops.dump(),
           std::string(R"({"source": null, "unavailable": "no profiler here", "latency_ns": [], "nodes": []})"));
}

// The same graph as litert.graph_placement gives, in Python: [('q', 'QUANTIZE', 'cpu', 2), ('conv', 'CONV_2D',
// 'xnnpack', 0), ('add', 'ADD', 'xnnpack', 0), ('pool', 'AVERAGE_POOL_2D', 'cpu', 3), ('fc', 'FULLY_CONNECTED',
// 'xnnpack', 1), ('#5', 'SOFTMAX', 'cpu', 4)], first choice 'gpu'.
TEST(placement_walks_back_from_each_delegate_kernel_like_the_python_plugin) {
  Graph graph;
  auto add = [&](const char* op, const char* name, std::vector<int> in, std::vector<int> out) {
    GraphNode node;
    node.index = static_cast<int>(graph.nodes.size());
    node.op = op;
    node.name = name;
    node.inputs = std::move(in);
    node.outputs = std::move(out);
    graph.nodes.push_back(node);
  };
  add("QUANTIZE", "q", {10}, {0});
  add("CONV_2D", "conv", {0, 20}, {1});
  add("ADD", "add", {1, 0}, {2});
  add("AVERAGE_POOL_2D", "pool", {2}, {3});
  add("FULLY_CONNECTED", "fc", {3, 21, -1}, {4});
  add("SOFTMAX", "#5", {4}, {5});
  add("DELEGATE", "add", {0, 20}, {2});
  add("DELEGATE", "fc", {3, 21}, {4});
  const Json placement = tflite_placement(graph, "xnnpack", "gpu");
  CHECK_EQ(placement.dump(),
           std::string(R"({"source": "litert-graph", "first_choice": "gpu", "nodes": [)"
                       R"({"name": "q", "op": "QUANTIZE", "backend": "cpu", "partition": 2}, )"
                       R"({"name": "conv", "op": "CONV_2D", "backend": "xnnpack", "partition": 0}, )"
                       R"({"name": "add", "op": "ADD", "backend": "xnnpack", "partition": 0}, )"
                       R"({"name": "pool", "op": "AVERAGE_POOL_2D", "backend": "cpu", "partition": 3}, )"
                       R"({"name": "fc", "op": "FULLY_CONNECTED", "backend": "xnnpack", "partition": 1}, )"
                       R"({"name": "#5", "op": "SOFTMAX", "backend": "cpu", "partition": 4}]})"));
  graph.nodes.resize(6);  // no delegate: the builtin kernels, one run of consecutive nodes
  const std::string cpu = tflite_placement(graph, "cpu", "cpu").dump();
  CHECK(cpu.find(R"("backend": "cpu", "partition": 0}]})") != std::string::npos);
  CHECK(cpu.find("xnnpack") == std::string::npos && cpu.find("\"partition\": 1") == std::string::npos);
  CHECK_EQ(delegate_label("/opt/lib/libedgetpu.so.1"), std::string("libedgetpu.so.1"));
  CHECK_EQ(delegate_label("XNNPACK"), std::string("xnnpack"));
  CHECK_EQ(builtin_operator_name(0), std::string("ADD"));
  CHECK_EQ(builtin_operator_name(32), std::string("CUSTOM"));
  CHECK_EQ(builtin_operator_name(51), std::string("DELEGATE"));
  CHECK_EQ(builtin_operator_name(209), std::string("STABLEHLO_CASE"));
  CHECK_EQ(builtin_operator_name(210), std::string());
}

#ifdef EDGEBENCH_WITH_TFLITE
TEST(op_timer_times_top_level_nodes_of_the_primary_subgraph_per_run) {
  OpTimer timer;
  tflite::TelemetryProfiler* p = timer.profiler();
  timer.reserve(4, 2);
  auto node = [&](const char* op, int64_t index, int64_t subgraph, int64_t ns) {
    const uint32_t handle = p->ReportBeginOpInvokeEvent(p, op, index, subgraph);
    busy_wait_ns(ns);
    p->ReportEndOpInvokeEvent(p, handle);
  };
  CHECK_EQ(p->ReportBeginOpInvokeEvent(p, "EARLY", 0, 0), UINT32_MAX);  // before any run: not ours
  for (int run = 0; run < 3; ++run) {
    timer.begin_run();
    node("QUANTIZE", 0, 0, 20000);
    const uint32_t outer = p->ReportBeginOpInvokeEvent(p, "WHILE", 2, 0);
    node("ADD", 1, 1, 20000);  // a control-flow body's node: inside WHILE's time, not a node of its own
    node("MUL", 3, 0, 20000);  // nested in another event: already counted in its parent
    p->ReportEndOpInvokeEvent(p, outer);
    p->ReportOpInvokeEvent(p, "Convolution (NHWC, QC8)", 7, 0, 0);  // a delegate's own operator: ignored
    std::thread([&] { node("THREAD", 3, 0, 1000); }).join();  // another thread's: ignored
  }
  CHECK_EQ(timer.runs(), static_cast<std::size_t>(3));
  const std::vector<OpTimer::Times> last = timer.last_runs(2);
  CHECK_EQ(last.size(), static_cast<std::size_t>(2));
  CHECK(last[0].index == 0 && last[0].op == "QUANTIZE" && last[1].index == 2 && last[1].op == "WHILE");
  for (const auto& times : last) CHECK_EQ(times.duration_ns.size(), static_cast<std::size_t>(2));
  CHECK(last[0].duration_ns[0] >= 20000 && last[0].duration_ns[0] < last[1].duration_ns[0]);
  CHECK(last[1].duration_ns[1] >= 40000);
  CHECK_EQ(timer.last_runs(9).front().duration_ns.size(), static_cast<std::size_t>(3));
}
#endif

TEST(backend_serialises_like_backend_to_dict) {
  Backend backend;
  backend.module = "tflite-c";
  backend.version = "2.23.0";
  backend.requested = {"gpu", "xnnpack"};
  backend.used = {"xnnpack"};
  backend.fallbacks.push_back({"gpu", "cannot load libtensorflowlite_gpu_delegate.so"});
  CHECK_EQ(backend.to_json().dump(),
           std::string(R"({"runtime": "native", "module": "tflite-c", "version": "2.23.0", "requested": ["gpu", )"
                       R"("xnnpack"], "used": ["xnnpack"], "fallbacks": [{"candidate": "gpu", "reason": "cannot load )"
                       R"(libtensorflowlite_gpu_delegate.so"}], "threads": null, "notes": []})"));
}

// ------------------------------------------------------------------------------------------ models, delegates
TEST(model_format_is_read_from_the_content) {
  std::string tflite(64, '\0');
  tflite[0] = 16;  // root table offset, inside the file
  tflite.replace(4, 4, "TFL3");
  CHECK_EQ(model_format(write_file("m.bin", tflite)), std::string("tflite"));
  CHECK_EQ(model_format(write_file("m2.bin", std::string("\x08\x07\x12\x04", 4) + "junk")), std::string("onnx"));
  std::string truncated = tflite;
  truncated[1] = 1;  // root offset 272, past the end
  CHECK_ERROR(model_format(write_file("t.tflite", truncated)), kExitBadModel, "truncated TFLite file");
  CHECK_ERROR(model_format(write_file("x.onnx", "hello world")), kExitBadModel,
              "is not a TFLite or ONNX model (named like one but its content is not): first bytes 68 65");
  CHECK_ERROR(model_format(write_file("empty.tflite", "")), kExitBadModel, "is empty");
  CHECK_ERROR(model_format(temp_dir() + "/nope.tflite"), kExitBadModel, "model file not found");
  CHECK_ERROR(model_format(temp_dir()), kExitBadModel, "is a directory");
}

TEST(delegate_and_provider_names_are_checked_before_loading) {
  RuntimeOptions options;
  options.delegates = {"XNNPACK", "gpu", "cpu", "/opt/lib/libdelegate.so", "libedgetpu.so.1"};
  check_chain("tflite", options);
  options.delegates = {"xnnpack", "warp-drive"};
  CHECK_ERROR(check_chain("tflite", options), kExitUnknownDelegate, "unknown TFLite delegate 'warp-drive'");
#ifdef EDGEBENCH_WITH_ORT
  options.providers = {"cuda", "TensorRT", "CPUExecutionProvider", "OpenVINO"};
  check_chain("onnx", options);
  options.providers = {"quantum"};
  CHECK_ERROR(check_chain("onnx", options), kExitUnknownDelegate, "unknown ONNX Runtime execution provider 'quantum'");
#endif
  CHECK_EQ(tflite_delegate_library("gpu"), std::string("libtensorflowlite_gpu_delegate.so"));
  CHECK_EQ(tflite_delegate_library("/x/libd.so"), std::string("/x/libd.so"));
  CHECK_EQ(tflite_delegate_library("xnnpack"), std::string(""));
}

#ifdef EDGEBENCH_WITH_TFLITE
TEST(missing_runtime_libraries_are_a_clear_error) {
  RuntimeOptions options;
  options.tflite_library = temp_dir() + "/libtensorflowlite_c.so";
  options.ort_library = temp_dir() + "/libonnxruntime.so";
  std::string tflite(64, '\0');
  tflite[0] = 16;
  tflite.replace(4, 4, "TFL3");
  const std::string model = write_file("lib.tflite", tflite);
  CHECK_ERROR(load_tflite(model, options), kExitMissingLibrary, "make native");
#ifdef EDGEBENCH_WITH_ORT
  CHECK_ERROR(load_onnx(write_file("lib.onnx", "\x08\x07"), options), kExitMissingLibrary, "cannot load the ONNX Runtime library");
#endif
  options.tflite_library = "libm.so.6";  // a real library that is not TFLite
  CHECK_ERROR(load_tflite(model, options), kExitMissingLibrary, "is not a TensorFlow Lite C library");
}
#endif

// ------------------------------------------------------------------------------------------- memory, events
TEST(memory_reads_proc_status) {
  const auto rss = current_rss();
  CHECK(rss && *rss > 0);
  const std::string path = write_file("status", "Name:\tx\nVmHWM:\t    1234 kB\nVmRSS:\t  99 kB\n");
  const auto hwm = status_bytes("VmHWM", path);
  CHECK(hwm && *hwm == 1234 * 1024);
  CHECK(!status_bytes("VmSwap", path));
  CHECK(!status_bytes("VmRSS", temp_dir() + "/no-such-status"));
}

TEST(events_are_whole_json_lines) {
  int fds[2];
  CHECK(pipe(fds) == 0);
  Events events(fds[1]);
  events.progress("measure", 12, 0.12345);
  events.error(kExitBadModel, "TFLite cannot load the model: bad \"flatbuffer\"");
  close(fds[1]);
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fds[0], buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<std::size_t>(n));
  close(fds[0]);
  CHECK_EQ(text, std::string(R"({"type": "progress", "phase": "measure", "runs": 12, "elapsed_s": 0.123})") + "\n" +
                     R"({"type": "error", "kind": "ModelError", "code": "bad_model", "exit_code": 3, )"
                     R"("message": "TFLite cannot load the model: bad \"flatbuffer\""})" + "\n");
}

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  int ran = 0;
  for (const auto& test : check::cases()) {
    if (!filter.empty() && std::string(test.name).find(filter) == std::string::npos) continue;
    const int before = check::failures();
    try {
      test.body();
    } catch (const std::exception& error) {
      check::fail(__FILE__, __LINE__, std::string(test.name) + " threw: " + error.what());
    }
    std::cout << (check::failures() == before ? "ok     " : "FAILED ") << test.name << "\n";
    ++ran;
  }
  std::cout << ran << " tests, " << check::failures() << " failures\n";
  return check::failures() == 0 && ran > 0 ? 0 : 1;
}

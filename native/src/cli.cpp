#include "cli.hpp"

#include <cerrno>
#include <cstdlib>
#include <fstream>

#include "inputs.hpp"

#ifndef EDGEBENCH_NATIVE_VERSION
#define EDGEBENCH_NATIVE_VERSION "0.1.0"
#endif
#ifndef EDGEBENCH_DEFAULT_TFLITE_LIB
#define EDGEBENCH_DEFAULT_TFLITE_LIB "libtensorflowlite_c.so"
#endif
#ifndef EDGEBENCH_DEFAULT_ORT_LIB
#define EDGEBENCH_DEFAULT_ORT_LIB "libonnxruntime.so"
#endif

namespace eb {
namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value && *value ? value : fallback;
}

int64_t parse_int(const std::string& text, const std::string& flag, int64_t minimum) {
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || value < minimum)
    throw Error(kExitUsage, flag + " '" + text + "' is not an integer >= " + std::to_string(minimum));
  return value;
}

std::vector<std::string> split_chain(const std::string& text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    const auto first = item.find_first_not_of(' '), last = item.find_last_not_of(' ');
    if (first != std::string::npos) items.push_back(item.substr(first, last - first + 1));
    start = end + 1;
  }
  return items;
}

}  // namespace

std::string default_tflite_library() { return env_or("EDGEBENCH_TFLITE_LIB", EDGEBENCH_DEFAULT_TFLITE_LIB); }
std::string default_ort_library() { return env_or("EDGEBENCH_ORT_LIB", EDGEBENCH_DEFAULT_ORT_LIB); }

std::string version_text() {
  std::string runtimes;
#ifdef EDGEBENCH_WITH_TFLITE
  runtimes += " tflite";
#endif
#ifdef EDGEBENCH_WITH_ORT
  runtimes += " onnx (ONNX Runtime C API " + std::to_string(EDGEBENCH_ORT_API_VERSION) + ")";
#endif
  return std::string("edgebench-native ") + EDGEBENCH_NATIVE_VERSION + "\nformats:" + runtimes +
         "\ndefault TFLite library: " + default_tflite_library() +
         "\ndefault ONNX Runtime library: " + default_ort_library() + "\n";
}

std::string usage() {
  return R"(usage: edgebench-native [options] MODEL

Benchmarks one .tflite or .onnx model with the measurement protocol of `edgebench bench` and writes JSON lines:
progress events, then one "result" (every latency sample, load and first-inference times, memory) or one
"error". Statistics are computed by edgebench in Python (`edgebench bench MODEL --runtime native`).

runtime:
  --format tflite|onnx        model format (default: from the file's content)
  --threads N                 intra-op threads (default: the runtime's default)
  --delegate CHAIN            TFLite delegates tried in order: xnnpack, cpu, ref, gpu, nnapi, edgetpu, hexagon,
                              armnn, qnn, or a delegate .so path (default xnnpack)
  --delegate-option K=V       options for external delegates / execution providers (repeatable)
  --providers CHAIN           ONNX Runtime execution providers in order (CUDA,CPU); CPU is the last resort
  --tflite-lib PATH           TensorFlow Lite C library (default: $EDGEBENCH_TFLITE_LIB or the build's)
  --ort-lib PATH              ONNX Runtime library (default: $EDGEBENCH_ORT_LIB or the build's)
inputs:
  --shape NAME=DIMS           concrete shape of an input (1x3x224x224, scalar); repeatable
  --input NAME=SOURCE         file.npy, a number, zeros, ones or random; repeatable
  --seed N                    seed of generated inputs (default 0)
run length:
  --min-runs N                measured runs continue until both minimums are met (default 400)
  --min-duration S            (default 1s); durations: 10, 2.5s, 500ms, 10m
  --max-duration S            hard cap on each phase (default 60s)
  --warmup-runs N             (default 5)
  --warmup-duration S         (default 0.5s)
  --progress-interval S       seconds between progress events (default 0.5)
per-op profile:
  --profile-runs N            after the measured phase, N inferences under the runtime's per-op profiler (default 0)
  --profile-dir DIR           where ONNX Runtime writes its profiles (placement needs it; --profile-runs without
                              it writes to $TMPDIR or /tmp); the result's "profile_files" names them
output:
  --events-fd FD              write the JSON-line events to this file descriptor (default 1, stdout)
  --dump-inputs DIR           save the inputs fed as DIR/input_<i>.npy (+ DIR/manifest.json)
  --dump-outputs DIR          save the last run's outputs as DIR/output_<i>.npy (+ DIR/manifest.json)
  --version, --help

exit codes: 0 ok, 1 internal error, 2 bad command line, 3 bad model, 4 bad input, 5 runtime library missing,
6 unknown delegate or provider, 7 no delegate/provider in the chain could run the model, 8 inference failed.
)";
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  cl.runtime.tflite_library = default_tflite_library();
  cl.runtime.ort_library = default_ort_library();
  std::vector<std::string> positional;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_value = false;
    if (starts_with(flag, "--")) {
      const std::size_t eq = flag.find('=');
      if (eq != std::string::npos) {
        value = flag.substr(eq + 1);
        flag = flag.substr(0, eq);
        has_value = true;
      }
    } else if (flag != "-h") {
      positional.push_back(flag);
      continue;
    }
    if (flag == "--help" || flag == "-h") {
      cl.help = true;
      continue;
    }
    if (flag == "--version") {
      cl.version = true;
      continue;
    }
    static const char* const valued[] = {
        "--format", "--threads", "--delegate", "--delegate-option", "--providers", "--tflite-lib", "--ort-lib",
        "--shape", "--input", "--seed", "--min-runs", "--min-duration", "--max-duration", "--warmup-runs",
        "--warmup-duration", "--progress-interval", "--profile-runs", "--profile-dir", "--events-fd", "--dump-inputs",
        "--dump-outputs", nullptr};
    bool known = false;
    for (const char* const* name = valued; *name; ++name) known = known || flag == *name;
    if (!known) throw Error(kExitUsage, "unknown option " + flag + " (see --help)");
    if (!has_value) {
      if (i + 1 >= args.size()) throw Error(kExitUsage, flag + " needs a value");
      value = args[++i];
    }
    if (flag == "--format") {
      if (value != "tflite" && value != "onnx") throw Error(kExitUsage, "--format must be tflite or onnx");
      cl.format = value;
    } else if (flag == "--threads") {
      cl.runtime.threads = static_cast<int>(parse_int(value, flag, 1));
    } else if (flag == "--delegate") {
      cl.runtime.delegates = split_chain(value);
    } else if (flag == "--delegate-option") {
      const std::size_t eq = value.find('=');
      if (eq == std::string::npos || eq == 0) throw Error(kExitUsage, "--delegate-option '" + value + "': expected K=V");
      cl.runtime.delegate_options.emplace_back(value.substr(0, eq), value.substr(eq + 1));
    } else if (flag == "--providers") {
      cl.runtime.providers = split_chain(value);
    } else if (flag == "--tflite-lib") {
      cl.runtime.tflite_library = value;
    } else if (flag == "--ort-lib") {
      cl.runtime.ort_library = value;
    } else if (flag == "--shape") {
      cl.shape_args.push_back(value);
    } else if (flag == "--input") {
      cl.input_args.push_back(value);
    } else if (flag == "--seed") {
      cl.seed = static_cast<uint64_t>(parse_int(value, flag, 0));
    } else if (flag == "--min-runs") {
      cl.settings.min_runs = parse_int(value, flag, 0);
    } else if (flag == "--min-duration") {
      cl.settings.min_duration_s = parse_duration(value, flag);
    } else if (flag == "--max-duration") {
      cl.settings.max_duration_s = parse_duration(value, flag);
    } else if (flag == "--warmup-runs") {
      cl.settings.warmup_runs = parse_int(value, flag, 0);
    } else if (flag == "--warmup-duration") {
      cl.settings.warmup_duration_s = parse_duration(value, flag);
    } else if (flag == "--progress-interval") {
      cl.settings.progress_interval_s = parse_duration(value, flag);
    } else if (flag == "--profile-runs") {
      cl.settings.profile_runs = parse_int(value, flag, 0);
    } else if (flag == "--profile-dir") {
      cl.runtime.profile_dir = value;
    } else if (flag == "--events-fd") {
      cl.events_fd = static_cast<int>(parse_int(value, flag, 0));
    } else if (flag == "--dump-inputs") {
      cl.dump_inputs = value;
    } else if (flag == "--dump-outputs") {
      cl.dump_outputs = value;
    }
  }
  if (cl.help || cl.version) return cl;
  if (positional.size() != 1)
    throw Error(kExitUsage, positional.empty() ? "no MODEL given (see --help)"
                                               : "one MODEL at a time; got: " + join(positional, " "));
  cl.model = positional[0];
  return cl;
}

}  // namespace eb

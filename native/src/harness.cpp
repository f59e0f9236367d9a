#include "harness.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "inputs.hpp"
#include "npy.hpp"
#include "runtimes.hpp"

#ifdef EDGEBENCH_WITH_ORT
#include "ort_api.hpp"
#endif
#ifdef EDGEBENCH_WITH_TFLITE
#include "tflite_api.hpp"
#endif

namespace eb {

void Events::send(const Json& event) {
  std::string line = event.dump();
  line += '\n';
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0 && ok_) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      ok_ = false;  // the reader went away: nothing left to tell
      break;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

void Events::progress(const char* phase, int64_t runs, double elapsed_s) {
  Json event = Json::object();
  event.set("type", "progress");
  event.set("phase", phase);
  event.set("runs", Json(static_cast<long long>(runs)));
  event.set("elapsed_s", Json(std::round(elapsed_s * 1000.0) / 1000.0));
  send(event);
}

void Events::error(int code, const std::string& message) {
  Json event = Json::object();
  event.set("type", "error");
  event.set("kind", error_kind(code));
  event.set("code", error_code_name(code));
  event.set("exit_code", code);
  event.set("message", message);
  send(event);
}

namespace {

// mkdir -p
void make_dir(const std::string& dir) {
  for (std::size_t at = 1; at <= dir.size(); ++at) {
    if (at < dir.size() && dir[at] != '/') continue;
    const std::string prefix = dir.substr(0, at);
    if (mkdir(prefix.c_str(), 0777) != 0 && errno != EEXIST)
      throw Error(kExitUsage, "cannot create directory " + prefix + ": " + std::strerror(errno));
  }
}

Json dump_arrays(const std::string& dir, const std::string& prefix, const std::vector<TensorSpec>& specs,
                 const std::vector<Array>& arrays) {
  make_dir(dir);
  Json list = Json::array();
  for (std::size_t i = 0; i < arrays.size(); ++i) {
    const std::string file = prefix + std::to_string(i) + ".npy";
    write_npy(dir + "/" + file, arrays[i]);
    Json item = Json::object();
    item.set("name", i < specs.size() ? specs[i].name : std::string());
    item.set("file", file);
    item.set("dtype", dtype_name(arrays[i].dtype));
    list.push(item);
  }
  return list;
}

void write_manifest(const std::string& dir, const Json* inputs, const Json* outputs) {
  Json manifest = Json::object();
  if (inputs) manifest.set("inputs", *inputs);
  if (outputs) manifest.set("outputs", *outputs);
  FILE* file = std::fopen((dir + "/manifest.json").c_str(), "w");
  if (!file) throw Error(kExitUsage, "cannot write " + dir + "/manifest.json");
  const std::string text = manifest.dump() + "\n";
  std::fwrite(text.data(), 1, text.size(), file);
  std::fclose(file);
}

}  // namespace

Json run_benchmark(const CommandLine& cl, Events& events) {
  cl.settings.validate();
  const ShapeArgs shapes = parse_shapes(cl.shape_args);
  const SourceArgs sources = parse_sources(cl.input_args);
  const std::string format = cl.format.empty() ? model_format(cl.model) : cl.format;
  if (!cl.format.empty()) model_format(cl.model);  // still report a missing / empty / foreign file clearly
  check_chain(format, cl.runtime);
  if (!cl.dump_inputs.empty()) make_dir(cl.dump_inputs);  // fail before the run, not after it
  if (!cl.dump_outputs.empty()) make_dir(cl.dump_outputs);

  double library_ms = 0.0;
  Loader load = [&]() -> std::unique_ptr<Session> {
    // The runtime library is loaded inside the timed load phase, as the Python engine imports the runtime
    // module there; how much of load_ms it took is reported in the notes.
    const int64_t t0 = monotonic_ns();
#ifdef EDGEBENCH_WITH_TFLITE
    if (format == "tflite") tflite::load_api(cl.runtime.tflite_library);
#endif
#ifdef EDGEBENCH_WITH_ORT
    if (format == "onnx") ort::load_library(cl.runtime.ort_library);
#endif
    library_ms = static_cast<double>(monotonic_ns() - t0) / 1e6;
    return format == "tflite" ? load_tflite(cl.model, cl.runtime) : load_onnx(cl.model, cl.runtime);
  };
  FeedsFactory feeds = [&](Session& session) { return build_feeds(session.inputs, shapes, sources, cl.seed); };
  ProgressFn progress = [&events](const char* phase, int64_t runs, double elapsed_s) {
    events.progress(phase, runs, elapsed_s);
  };
  auto on_phase = [&events](const char* phase) {
    Json event = Json::object();
    event.set("type", "phase");
    event.set("phase", phase);
    events.send(event);
  };
  BenchOutcome outcome = benchmark(load, feeds, cl.settings, &progress, on_phase);
  Session& session = *outcome.session;
  session.backend.notes.push_back("load_ms includes loading the runtime library (" + json_double(std::round(library_ms * 1000) / 1000) + " ms)");
  if (!session.placement_note.empty())
    session.backend.notes.push_back("placement unknown: " + session.placement_note);

  Json result = Json::object();
  Json list = Json::array();
  for (const auto& spec : session.inputs) list.push(spec_to_json(spec));
  result.set("inputs", list);
  list = Json::array();
  for (const auto& spec : session.outputs) list.push(spec_to_json(spec));
  result.set("outputs", list);
  result.set("backend", session.backend.to_json());
  result.set("feeds", describe_feeds(session.inputs, outcome.feeds, sources));
  result.set("timing", outcome.timing);
  result.set("samples", outcome.samples);
  result.set("wall_ns", Json(static_cast<long long>(outcome.wall_ns)));
  result.set("memory", outcome.memory);
  result.set("placement", outcome.placement);
  result.set("ops", outcome.ops);
  // ONNX Runtime's profile files: agent/engine/executors/native.py turns them into "placement" and "ops.nodes"
  // (through agent/runtimes/ort_profile.py, as for the Python plugin) and drops this key.
  if (outcome.profile_files.size() > 0) result.set("profile_files", outcome.profile_files);

  // After the protocol, outside every timed region.
  Json dumped_inputs, dumped_outputs;
  if (!cl.dump_inputs.empty()) dumped_inputs = dump_arrays(cl.dump_inputs, "input_", session.inputs, outcome.feeds);
  if (!cl.dump_outputs.empty())
    dumped_outputs = dump_arrays(cl.dump_outputs, "output_", session.outputs, session.fetch_outputs());
  if (!cl.dump_inputs.empty() && cl.dump_inputs == cl.dump_outputs) {
    write_manifest(cl.dump_inputs, &dumped_inputs, &dumped_outputs);
  } else {
    if (!cl.dump_inputs.empty()) write_manifest(cl.dump_inputs, &dumped_inputs, nullptr);
    if (!cl.dump_outputs.empty()) write_manifest(cl.dump_outputs, nullptr, &dumped_outputs);
  }
  return result;
}

int harness_main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  CommandLine cl;
  try {
    cl = parse_command_line(args);
  } catch (const Error& error) {
    std::cerr << "edgebench-native: error: " << error.what() << "\n";
    return error.code();
  }
  if (cl.help) {
    std::cout << usage();
    return kExitOk;
  }
  if (cl.version) {
    std::cout << version_text();
    return kExitOk;
  }
  struct stat fd_info;
  if (fstat(cl.events_fd, &fd_info) != 0) {
    std::cerr << "edgebench-native: error: --events-fd " << cl.events_fd << " is not an open file descriptor\n";
    return kExitUsage;
  }
  Events events(cl.events_fd);
  int code = kExitOk;
  std::string message;
  try {
    Json result = run_benchmark(cl, events);
    Json event = Json::object();
    event.set("type", "result");
    event.set("result", result);
    events.send(event);
  } catch (const Error& error) {
    code = error.code();
    message = error.what();
  } catch (const std::bad_alloc&) {
    code = kExitInferenceFailed;
    message = "the runtime ran out of memory (std::bad_alloc)";
  } catch (const std::exception& error) {
    code = kExitInternal;
    message = std::string("internal error: ") + error.what();
  }
  if (code != kExitOk) {
    events.error(code, message);
    std::cerr << "edgebench-native: error: " << message << "\n";
  }
  std::cout.flush();
  return code;
}

}  // namespace eb

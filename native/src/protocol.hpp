// The measurement protocol, the same as agent/measure.py: load the model (timed), build the inputs, one first
// inference (timed alone), warm-up until both a run count and a duration are met, then the measured phase until
// both min_runs and min_duration are met, capped by max_duration. Each run is timed on CLOCK_MONOTONIC around
// the session's bare inference call and nothing else. No statistics here: the raw samples go to Python, where
// agent/stats.py computes them like for every other runtime.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "json.hpp"

namespace eb {

struct Settings {  // measure.RunSettings
  int64_t min_runs = 400;
  double min_duration_s = 1.0;
  double max_duration_s = 60.0;
  int64_t warmup_runs = 5;
  double warmup_duration_s = 0.5;
  double progress_interval_s = 0.5;
  int64_t profile_runs = 0;  // --profile-ops: inferences under the runtime's per-op profiler, after the measured phase
  void validate() const;  // throws Error(kExitUsage) with RunSettings.validate's messages
};

struct Fallback {
  std::string candidate;
  std::string reason;
};

// What actually ran (runtimes.base.Backend): copied into the report's "runtime" section.
struct Backend {
  std::string runtime = "native";
  std::string module;   // "tflite-c" or "onnxruntime-c"
  std::string version;  // the runtime library's own version
  std::vector<std::string> requested;
  std::vector<std::string> used;
  std::vector<Fallback> fallbacks;
  std::optional<int> threads;
  std::vector<std::string> notes;
  Json to_json() const;
};

// A runtime's own per-op profiler around a second session of the same model (runtimes.base.OpProfiler): run()
// performs one profiled inference, which the protocol times like any other; collect() returns, per node, its time
// in each of the last `runs` runs ([{"name", "op", "backend", "duration_ns"}], execution order), read from the
// runtime's own events: nothing is estimated.
class OpProfiler {
 public:
  virtual ~OpProfiler() = default;
  std::string source;
  // Where the runtime wrote its profile when the executor reads the nodes from that file instead (ONNX Runtime:
  // agent/runtimes/ort_profile.py reads it); collect() then returns no nodes.
  std::string profile_file;
  virtual void run() = 0;
  virtual Json collect(int64_t runs) = 0;
};

// A loaded model. run() performs exactly one inference on the bound inputs: it is what the protocol times.
class Session {
 public:
  virtual ~Session() = default;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  Backend backend;
  // Set the inputs (resizing where shapes changed); feeds are in `inputs` order. Throws Error(kExitBadInput).
  virtual void bind(const std::vector<Array>& feeds) = 0;
  // One inference; throws Error(kExitInferenceFailed) with the runtime's message.
  virtual void run() = 0;
  // The outputs of the last run, in `outputs` order.
  virtual std::vector<Array> fetch_outputs() = 0;
  // Where each node ran (the worker result's "placement"), read after the measured phase, outside every timed
  // region; null when the runtime cannot say (placement_note says why) or when the executor reads it from
  // placement_file (ONNX Runtime: the profile of one inference of a second, profiled session).
  virtual Json placement() { return Json(); }
  std::string placement_file;
  std::string placement_note;
  // A per-op profiler over the inputs `feeds` (--profile-ops) for about `runs` profiled inferences (its buffers
  // are sized before the first), or null with the reason this runtime has none.
  virtual std::unique_ptr<OpProfiler> op_profiler(const std::vector<Array>& feeds, int64_t runs,
                                                  std::string* unavailable) {
    *unavailable = "this runtime exposes no per-op profiler";
    return nullptr;
  }
};

using ProgressFn = std::function<void(const char* phase, int64_t runs, double elapsed_s)>;

struct Phase {
  std::vector<int64_t> start_ns;  // monotonic time of each run's start
  std::vector<int64_t> latency_ns;
  int64_t wall_ns = 0;  // the phase's start to the last run's end (what the duration rule counts)
  bool reached_min_runs = false;
  bool reached_min_duration = false;
};

// measure.run_loop: call `run` until both minimums are met or max_duration_s passes; time each call.
// `expected_runs` only sizes the sample buffers.
template <class Run>
Phase run_loop(Run&& run, int64_t min_runs, double min_duration_s, double max_duration_s, const char* phase,
               const ProgressFn* progress, double progress_interval_s, int64_t expected_runs = 0) {
  Phase result;
  // Room for the expected samples up front, so the vectors do not grow (copying megabytes) between runs.
  const std::size_t expected = static_cast<std::size_t>(std::max<int64_t>({min_runs, expected_runs, 0})) + 64;
  result.start_ns.reserve(expected);
  result.latency_ns.reserve(expected);
  const int64_t min_ns = static_cast<int64_t>(min_duration_s * 1e9);
  const int64_t max_ns = static_cast<int64_t>(max_duration_s * 1e9);
  const int64_t interval_ns = static_cast<int64_t>(progress_interval_s * 1e9);
  const int64_t begin = monotonic_ns();
  int64_t next_report = begin + interval_ns;
  const int64_t deadline = begin + max_ns;
  int64_t count = 0;
  int64_t end = begin;
  while (count < min_runs || end - begin < min_ns) {
    if (count && end >= deadline) break;
    const int64_t t0 = monotonic_ns();
    run();
    end = monotonic_ns();
    result.start_ns.push_back(t0);
    result.latency_ns.push_back(end - t0);
    ++count;
    if (progress != nullptr && end >= next_report) {
      (*progress)(phase, count, static_cast<double>(end - begin) / 1e9);
      next_report = end + interval_ns;
    }
  }
  result.wall_ns = end - begin;
  result.reached_min_runs = count >= min_runs;
  result.reached_min_duration = end - begin >= min_ns;
  return result;
}

struct BenchOutcome {
  std::unique_ptr<Session> session;
  std::vector<Array> feeds;
  Json placement;  // null: unknown, or in profile_files
  Json ops;        // null without --profile-runs
  Json profile_files = Json::object();  // "placement" / "ops": runtime profile files the executor reads
  Json timing;
  Json samples;
  int64_t wall_ns = 0;
  Json memory;
};

// measure.PROFILE_WARMUP_RUNS: profiled inferences before the profiled runs that count.
constexpr int64_t kProfileWarmupRuns = 3;

using Loader = std::function<std::unique_ptr<Session>()>;
using FeedsFactory = std::function<std::vector<Array>(Session&)>;

// measure.benchmark. `on_phase` is told "measure" just before the measured loop and "measured" just after it (crash
// attribution and the noise window of the parent).
BenchOutcome benchmark(const Loader& load, const FeedsFactory& make_feeds, const Settings& settings,
                       const ProgressFn* progress, const std::function<void(const char*)>& on_phase = {});

// measure._guarded: run `action`; a runtime failure becomes Error(kExitInferenceFailed, "<what> failed: ...").
void guarded(const std::function<void()>& action, const std::string& what);

}  // namespace eb

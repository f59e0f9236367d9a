#include "protocol.hpp"

#include <algorithm>
#include <new>

#include "memory.hpp"

namespace eb {

void Settings::validate() const {
  if (profile_runs < 0) throw Error(kExitUsage, "--profile-runs must be at least 1");
  if (min_runs < 1 || warmup_runs < 0)
    throw Error(kExitUsage, "--min-runs must be at least 1 and --warmup-runs at least 0");
  if (std::min(min_duration_s, warmup_duration_s) < 0 || max_duration_s <= 0)
    throw Error(kExitUsage, "durations must be non-negative and --max-duration positive");
  if (max_duration_s < min_duration_s)
    throw Error(kExitUsage, "--max-duration (" + format_g(max_duration_s) + "s) is shorter than --min-duration (" +
                                format_g(min_duration_s) + "s)");
  if (progress_interval_s <= 0) throw Error(kExitUsage, "--progress-interval must be positive");
}

Json Backend::to_json() const {
  Json out = Json::object();
  out.set("runtime", runtime);
  out.set("module", module);
  out.set("version", version);
  Json list = Json::array();
  for (const auto& item : requested) list.push(item);
  out.set("requested", list);
  list = Json::array();
  for (const auto& item : used) list.push(item);
  out.set("used", list);
  list = Json::array();
  for (const auto& fallback : fallbacks) {
    Json entry = Json::object();
    entry.set("candidate", fallback.candidate);
    entry.set("reason", fallback.reason);
    list.push(entry);
  }
  out.set("fallbacks", list);
  out.set("threads", threads ? Json(*threads) : Json());
  list = Json::array();
  for (const auto& note : notes) list.push(note);
  out.set("notes", list);
  return out;
}

void guarded(const std::function<void()>& action, const std::string& what) {
  try {
    action();
  } catch (const Error& error) {
    if (error.code() != kExitInferenceFailed) throw;
    const std::string message = first_line(error.what());
    throw Error(kExitInferenceFailed, what + " failed: " + (message.empty() ? "unknown error" : message));
  } catch (const std::bad_alloc&) {
    throw Error(kExitInferenceFailed, "the runtime ran out of memory in " + what);
  } catch (const std::exception& error) {
    throw Error(kExitInferenceFailed, what + " failed: " + first_line(error.what()));
  }
}

namespace {
Json optional_bytes(const std::optional<int64_t>& value) {
  return value ? Json(static_cast<long long>(*value)) : Json();
}

Json ops_json(const Json& source, const Json& unavailable, const std::vector<int64_t>& latency_ns, Json nodes) {
  Json ops = Json::object();
  ops.set("source", source);
  ops.set("unavailable", unavailable);
  ops.set("latency_ns", Json::int_array(latency_ns));
  ops.set("nodes", std::move(nodes));
  return ops;
}

// measure.profile_ops: settings.profile_runs inferences under the runtime's own per-op profiler, after the
// measured phase (its cost never touches the measured samples), each timed end to end like a measured one.
Json profile_ops(Session& session, const std::vector<Array>& feeds, const Settings& settings,
                 const ProgressFn* progress, std::string* profile_file) {
  std::string unavailable;
  std::unique_ptr<OpProfiler> profiler;
  guarded([&] { profiler = session.op_profiler(feeds, kProfileWarmupRuns + settings.profile_runs, &unavailable); },
          "starting the per-op profiler");
  if (!profiler) return ops_json(Json(), unavailable, {}, Json::array());
  auto run = [&profiler] { profiler->run(); };
  guarded([&] { run_loop(run, kProfileWarmupRuns, 0.0, settings.max_duration_s, "profile", nullptr, 1.0); },
          "the profiled warm-up");
  if (progress) (*progress)("profile", 0, 0.0);
  Phase profiled;
  guarded([&] {
    profiled = run_loop(run, settings.profile_runs, 0.0, settings.max_duration_s, "profile", progress,
                        settings.progress_interval_s);
  }, "the profiled runs");
  Json nodes;
  guarded([&] { nodes = profiler->collect(static_cast<int64_t>(profiled.latency_ns.size())); },
          "reading the per-op profile");
  *profile_file = profiler->profile_file;
  return ops_json(Json(profiler->source), Json(), profiled.latency_ns, std::move(nodes));
}
}  // namespace

BenchOutcome benchmark(const Loader& load, const FeedsFactory& make_feeds, const Settings& settings,
                       const ProgressFn* progress, const std::function<void(const char*)>& on_phase) {
  BenchOutcome outcome;
  const auto rss_before_load = current_rss();
  if (progress) (*progress)("load", 0, 0.0);
  int64_t t0 = monotonic_ns();
  outcome.session = load();
  const int64_t load_ns = monotonic_ns() - t0;
  const auto rss_after_load = current_rss();
  Session& session = *outcome.session;
  outcome.feeds = make_feeds(session);
  session.bind(outcome.feeds);
  t0 = monotonic_ns();
  guarded([&] { session.run(); }, "the first inference");
  const int64_t first_ns = monotonic_ns() - t0;
  if (progress) (*progress)("warmup", 1, 0.0);
  auto run = [&session] { session.run(); };
  Phase warmup, measured;
  guarded([&] {
    warmup = run_loop(run, settings.warmup_runs, settings.warmup_duration_s, settings.max_duration_s, "warmup",
                      progress, settings.progress_interval_s);
  }, "warm-up");
  const auto load_peak = peak_rss();
  const bool can_reset = reset_peak();
  const auto rss_before_measure = current_rss();
  if (on_phase) on_phase("measure");
  // How many runs min_duration will take at the warm-up's pace (+10%), capped at 8M samples (128 MB).
  int64_t expected_runs = settings.min_runs;
  if (!warmup.latency_ns.empty() && warmup.wall_ns > 0) {
    const double per_run_ns = static_cast<double>(warmup.wall_ns) / static_cast<double>(warmup.latency_ns.size());
    const double by_duration = settings.min_duration_s * 1e9 / per_run_ns * 1.1;
    expected_runs = std::max<int64_t>(expected_runs, static_cast<int64_t>(std::min(by_duration, 8.0e6)));
  }
  guarded([&] {
    measured = run_loop(run, settings.min_runs, settings.min_duration_s, settings.max_duration_s, "measure",
                        progress, settings.progress_interval_s, expected_runs);
  }, "the measured run");
  // The measured phase's end (measure.benchmark's on_phase("measured")): the supervisor's noise window closes
  // here, before placement and the per-op profiler run their own sessions.
  if (on_phase) on_phase("measured");
  const auto steady_peak = can_reset ? peak_rss() : std::nullopt;
  const int64_t origin = measured.start_ns.front();
  // After the measured phase, like every profiler: ONNX Runtime runs a second, profiled session once to tell.
  guarded([&] { outcome.placement = session.placement(); }, "reading where the nodes ran");
  if (!session.placement_file.empty()) outcome.profile_files.set("placement", session.placement_file);
  if (settings.profile_runs > 0) {
    std::string ops_file;
    outcome.ops = profile_ops(session, outcome.feeds, settings, progress, &ops_file);
    if (!ops_file.empty()) outcome.profile_files.set("ops", ops_file);
  }

  Json warmup_json = Json::object();
  warmup_json.set("runs", Json(static_cast<long long>(warmup.latency_ns.size())));
  warmup_json.set("duration_s", Json(static_cast<double>(warmup.wall_ns) / 1e9));
  Json measured_json = Json::object();
  measured_json.set("runs", Json(static_cast<long long>(measured.latency_ns.size())));
  measured_json.set("duration_s", Json(static_cast<double>(measured.wall_ns) / 1e9));
  measured_json.set("reached_min_runs", measured.reached_min_runs);
  measured_json.set("reached_min_duration", measured.reached_min_duration);
  measured_json.set("origin_monotonic_ns", Json(static_cast<long long>(origin)));
  outcome.timing = Json::object();
  outcome.timing.set("load_ms", Json(static_cast<double>(load_ns) / 1e6));
  outcome.timing.set("first_inference_ms", Json(static_cast<double>(first_ns) / 1e6));
  outcome.timing.set("warmup", warmup_json);
  outcome.timing.set("measured", measured_json);

  std::vector<int64_t> offsets(measured.start_ns.size());
  for (std::size_t i = 0; i < offsets.size(); ++i) offsets[i] = measured.start_ns[i] - origin;
  outcome.samples = Json::object();
  outcome.samples.set("latency_ns", Json::int_array(measured.latency_ns));
  outcome.samples.set("start_offset_ns", Json::int_array(offsets));
  outcome.wall_ns = measured.wall_ns;

  outcome.memory = Json::object();
  outcome.memory.set("rss_before_load_bytes", optional_bytes(rss_before_load));
  outcome.memory.set("rss_after_load_bytes", optional_bytes(rss_after_load));
  outcome.memory.set("peak_load_bytes", optional_bytes(load_peak));  // load, first inference and warm-up
  outcome.memory.set("rss_before_measure_bytes", optional_bytes(rss_before_measure));
  outcome.memory.set("peak_steady_bytes", optional_bytes(steady_peak));  // the measured phase alone
  outcome.memory.set("peak_method", can_reset ? Json("vmhwm") : (load_peak ? Json("vmhwm-lifetime") : Json()));
  return outcome;
}

}  // namespace eb

// What the TFLite C API lets the harness see of a model's graph and of each node's time:
//  - GraphObserver: an opaque delegate added after the real one, whose Prepare reads the subgraph as the
//    interpreter holds it then (every node, the execution plan) and replaces nothing, so it changes nothing that
//    runs. The delegate API is the only place the C API hands out the graph after delegation.
//  - OpTimer: the interpreter's telemetry profiler, which the interpreter calls around each node it invokes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "placement.hpp"
#include "tflite_api.hpp"

namespace eb {

class GraphObserver {
 public:
  // Null delegate() when the library lacks the opaque-delegate API (missing_for_graph() says what).
  explicit GraphObserver(const tflite::Api& api);
  ~GraphObserver();
  GraphObserver(const GraphObserver&) = delete;
  GraphObserver& operator=(const GraphObserver&) = delete;

  tflite::Delegate* delegate() const { return delegate_; }
  // The primary subgraph as the observer's Prepare saw it; null before, or when it could not be read (why()).
  const Graph* graph() const { return seen_ && why_.empty() ? &graph_ : nullptr; }
  const std::string& why() const { return why_; }

 private:
  static int prepare(tflite::OpaqueContext* context, tflite::Delegate* delegate, void* data);
  void read(tflite::OpaqueContext* context);
  GraphNode read_node(tflite::OpaqueContext* context, int index);

  const tflite::Api& api_;
  tflite::OpaqueDelegateBuilder builder_{};
  tflite::Delegate* delegate_ = nullptr;
  Graph graph_;
  bool seen_ = false;
  std::string why_;
};

// Times each node the interpreter invokes, on CLOCK_MONOTONIC, between the telemetry profiler's begin and end
// callbacks. Only top-level events of the primary subgraph on the invoking thread count: a node invoked inside
// another (a control-flow body, a delegate's own operators) is already inside its parent's time.
class OpTimer {
 public:
  // A delegate that declares per-operator profiling (kTfLiteDelegateFlagsPerOperatorProfiling: XNNPACK, the GPU
  // delegate) is not timed by the interpreter, which leaves the profile to it; XNNPACK then reports only its own
  // operators' times, in whole microseconds, which are not the model's nodes. Clearing the flag on the profiling
  // interpreter's own delegate instance (before the interpreter is created) makes the interpreter time each of
  // its kernels like any other node; the measured interpreter's delegate is left as it is.
  static void clear_per_operator_profiling(tflite::Delegate* delegate);

  OpTimer();
  tflite::TelemetryProfiler* profiler() { return &profiler_; }
  // Room for `runs` runs of `nodes` nodes, allocated before any timed run.
  void reserve(std::size_t nodes, std::size_t runs);
  // The next inference's events belong to a new run (called just before each profiled invoke).
  void begin_run();
  std::size_t runs() const { return static_cast<std::size_t>(current_ + 1); }
  // Node index -> its time in each of the last `runs` runs (0 in a run where it did not run); nodes that never
  // ran in them are left out. `op` is the name the interpreter reported for the node.
  struct Times {
    int index;
    std::string op;
    std::vector<int64_t> duration_ns;
  };
  std::vector<Times> last_runs(std::size_t runs) const;

 private:
  static uint32_t on_begin(tflite::TelemetryProfiler* profiler, const char* op_name, int64_t op_idx,
                           int64_t subgraph_idx);
  static void on_end(tflite::TelemetryProfiler* profiler, uint32_t handle);
  static void on_elapsed(tflite::TelemetryProfiler* profiler, const char* op_name, uint64_t elapsed_us,
                         int64_t op_idx, int64_t subgraph_idx);

  struct Open {
    int64_t node;  // -1: not counted
    int64_t start_ns;
  };
  tflite::TelemetryProfiler profiler_{};
  std::thread::id thread_;
  std::vector<Open> events_;                // this run's events, by handle
  int64_t depth_ = 0;                        // events begun and not ended
  std::vector<std::vector<int64_t>> runs_;  // run -> node index -> ns
  std::vector<const char*> op_names_;       // node index -> the name the interpreter reported
  int64_t current_ = -1;
};

}  // namespace eb

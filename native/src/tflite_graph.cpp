#include "tflite_graph.hpp"

#include <utility>

#include "common.hpp"

namespace eb {

GraphObserver::GraphObserver(const tflite::Api& api) : api_(api) {
  why_ = api_.missing_for_graph();
  if (!why_.empty()) {
    why_ = "this TensorFlow Lite library does not export " + why_;
    return;
  }
  builder_.data = this;
  builder_.Prepare = &GraphObserver::prepare;
  // It replaces nothing, so it can run over dynamic tensors: without this flag the interpreter would refuse a
  // graph with dynamic tensors for it, and would prepare every node once more to find out.
  builder_.flags = tflite::kDelegateFlagsAllowDynamicTensors;
  delegate_ = api_.TfLiteOpaqueDelegateCreate(&builder_);
  if (!delegate_) why_ = "TfLiteOpaqueDelegateCreate failed";
}

GraphObserver::~GraphObserver() {
  if (delegate_) api_.TfLiteOpaqueDelegateDelete(delegate_);
}

int GraphObserver::prepare(tflite::OpaqueContext* context, tflite::Delegate*, void* data) {
  auto* self = static_cast<GraphObserver*>(data);
  // The interpreter prepares the primary subgraph first, then any others (control-flow bodies); the Python
  // plugin's op list is the primary subgraph's, so the first call is the one kept.
  if (self->seen_) return tflite::kOk;
  self->seen_ = true;
  try {
    self->read(context);
  } catch (const std::exception& error) {  // never let an exception cross the C library
    self->why_ = error.what();
  }
  return tflite::kOk;  // the graph stays as it is: nothing replaced
}

void GraphObserver::read(tflite::OpaqueContext* context) {
  tflite::IntArray* plan = nullptr;
  if (api_.TfLiteOpaqueContextGetExecutionPlan(context, &plan) != tflite::kOk || !plan) {
    why_ = "TfLiteOpaqueContextGetExecutionPlan failed";
    return;
  }
  graph_.plan.assign(plan->data, plan->data + plan->size);
  const int count = static_cast<int>(api_.TfLiteOpaqueContextGetNumNodes(context));
  for (int index = 0; index < count && why_.empty(); ++index) graph_.nodes.push_back(read_node(context, index));
}

GraphNode GraphObserver::read_node(tflite::OpaqueContext* context, int index) {
  GraphNode node;
  node.index = index;
  tflite::OpaqueNode* opaque = nullptr;
  tflite::Operator* op = nullptr;
  if (api_.TfLiteOpaqueContextGetNodeAndRegistration(context, index, &opaque, &op) != tflite::kOk || !op) {
    why_ = "TfLiteOpaqueContextGetNodeAndRegistration failed for node " + std::to_string(index);
    return node;
  }
  const int code = api_.TfLiteOperatorGetBuiltInCode(op);
  const char* custom = api_.TfLiteOperatorGetCustomName(op);
  // The Python interpreter's names (NodeName): a custom op by its name, a builtin one by the schema's.
  if (code == tflite::kBuiltinCustom) {
    node.op = custom ? custom : "UnknownCustomOp";
  } else {
    node.op = builtin_operator_name(code);
    if (node.op.empty()) node.op = "BUILTIN_" + std::to_string(code);
  }
  const int* tensors = nullptr;
  int n = 0;
  if (api_.TfLiteOpaqueNodeInputs(opaque, &tensors, &n) == tflite::kOk && tensors)
    node.inputs.assign(tensors, tensors + n);
  n = 0;
  if (api_.TfLiteOpaqueNodeOutputs(opaque, &tensors, &n) == tflite::kOk && tensors)
    node.outputs.assign(tensors, tensors + n);
  node.name = "#" + std::to_string(index);
  if (!node.outputs.empty() && node.outputs[0] >= 0) {
    const tflite::OpaqueTensor* tensor = api_.TfLiteOpaqueContextGetOpaqueTensor(context, node.outputs[0]);
    const char* name = tensor ? api_.TfLiteOpaqueTensorName(tensor) : nullptr;
    if (name) node.name = name;
  }
  return node;
}

// ------------------------------------------------------------------------------------------------- OpTimer

namespace {
void ignore_event(tflite::TelemetryProfiler*, const char*, uint64_t) {}
void ignore_op_event(tflite::TelemetryProfiler*, const char*, int64_t, int64_t, uint64_t) {}
void ignore_settings(tflite::TelemetryProfiler*, const char*, const void*) {}
}  // namespace

void OpTimer::clear_per_operator_profiling(tflite::Delegate* delegate) {
  reinterpret_cast<tflite::DelegateHead*>(delegate)->flags &= ~tflite::kDelegateFlagsPerOperatorProfiling;
}

OpTimer::OpTimer() {
  // Every callback is set: the interpreter calls them without checking for null.
  profiler_.data = this;
  profiler_.ReportTelemetryEvent = ignore_event;
  profiler_.ReportTelemetryOpEvent = ignore_op_event;
  profiler_.ReportSettings = ignore_settings;
  profiler_.ReportBeginOpInvokeEvent = &OpTimer::on_begin;
  profiler_.ReportEndOpInvokeEvent = &OpTimer::on_end;
  profiler_.ReportOpInvokeEvent = &OpTimer::on_elapsed;
}

void OpTimer::reserve(std::size_t nodes, std::size_t runs) {
  op_names_.assign(nodes, nullptr);
  runs_.assign(runs, std::vector<int64_t>(nodes, 0));
  events_.reserve(4 * nodes + 16);
  current_ = -1;
}

void OpTimer::begin_run() {
  ++current_;
  if (static_cast<std::size_t>(current_) >= runs_.size()) runs_.emplace_back(op_names_.size(), 0);
  events_.clear();
  depth_ = 0;
  thread_ = std::this_thread::get_id();
}

uint32_t OpTimer::on_begin(tflite::TelemetryProfiler* profiler, const char* op_name, int64_t op_idx,
                           int64_t subgraph_idx) {
  auto* self = static_cast<OpTimer*>(profiler->data);
  if (self->current_ < 0 || std::this_thread::get_id() != self->thread_) return UINT32_MAX;  // not ours to time
  const bool counted = self->depth_ == 0 && subgraph_idx == 0 && op_idx >= 0 &&
                       static_cast<std::size_t>(op_idx) < self->op_names_.size();
  ++self->depth_;
  if (counted && !self->op_names_[static_cast<std::size_t>(op_idx)])
    self->op_names_[static_cast<std::size_t>(op_idx)] = op_name;
  self->events_.push_back({counted ? op_idx : -1, monotonic_ns()});
  return static_cast<uint32_t>(self->events_.size() - 1);
}

void OpTimer::on_end(tflite::TelemetryProfiler* profiler, uint32_t handle) {
  const int64_t now = monotonic_ns();
  auto* self = static_cast<OpTimer*>(profiler->data);
  if (handle == UINT32_MAX || handle >= self->events_.size()) return;
  --self->depth_;
  const Open& event = self->events_[handle];
  if (event.node >= 0)
    self->runs_[static_cast<std::size_t>(self->current_)][static_cast<std::size_t>(event.node)] += now - event.start_ns;
}

// A delegate's own operators (XNNPACK's, in whole microseconds): not the model's nodes, and inside the time of the
// delegate kernel that ran them, which the interpreter times (see clear_per_operator_profiling).
void OpTimer::on_elapsed(tflite::TelemetryProfiler*, const char*, uint64_t, int64_t, int64_t) {}

std::vector<OpTimer::Times> OpTimer::last_runs(std::size_t runs) const {
  const std::size_t done = this->runs();
  const std::size_t first = runs < done ? done - runs : 0;
  std::vector<Times> result;
  for (std::size_t node = 0; node < op_names_.size(); ++node) {
    if (!op_names_[node]) continue;
    Times times{static_cast<int>(node), op_names_[node], {}};
    bool ran = false;
    for (std::size_t run = first; run < done; ++run) {
      times.duration_ns.push_back(runs_[run][node]);
      ran = ran || runs_[run][node] > 0;
    }
    if (ran) result.push_back(std::move(times));
  }
  return result;
}

}  // namespace eb

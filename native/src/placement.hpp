// Where each node of a model ran and how long each took, as raw data for the worker result's "placement" and
// "ops" (agent/engine/ops.py counts them; the harness never does). Runtime-independent: the TFLite graph as the
// interpreter holds it after delegation, and the walk that says which nodes each delegate kernel took.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "json.hpp"

namespace eb {

// One node of a TFLite subgraph after the delegates were applied: the model's own nodes keep their indices (a
// delegated one stays in the node list, out of the execution plan), and each delegate kernel is a node appended
// after them, whose inputs and outputs are its partition's boundary.
struct GraphNode {
  int index = 0;
  std::string op;           // builtin name ("CONV_2D"), custom op name, "DELEGATE" for a delegate kernel
  std::string name;         // its first output tensor's name ("#<index>" without one), as the Python plugin names it
  std::vector<int> inputs;  // tensor indices (-1: an optional input left out)
  std::vector<int> outputs;
  bool delegate_kernel() const { return op == "DELEGATE"; }
};

struct Graph {
  std::vector<GraphNode> nodes;  // by index
  std::vector<int> plan;         // the execution plan: node indices in execution order
};

// The name TFLite's schema gives a builtin operator code (EnumNameBuiltinOperator), "" outside the table.
std::string builtin_operator_name(int code);

// litert.delegate_label: a delegate library's path becomes its file name, a chain name is lower-cased.
std::string delegate_label(const std::string& used);

// litert.graph_placement: which model nodes each delegate kernel took (walked back from the kernel's outputs to
// its inputs), every other node on the interpreter's own kernels ("cpu"), numbered in runs of consecutive nodes.
// The worker result's "placement" object.
Json tflite_placement(const Graph& graph, const std::string& used, const std::string& first_choice);

// One node's time in each profiled run, for the worker result's "ops.nodes".
struct NodeTimes {
  std::string name;
  std::string op;
  std::string backend;
  std::vector<int64_t> duration_ns;  // one per profiled run, in run order
};
Json node_times_json(const std::vector<NodeTimes>& nodes);

}  // namespace eb

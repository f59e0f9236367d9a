#include "placement.hpp"

#include <map>
#include <set>

#include "common.hpp"

namespace eb {
namespace {

// BuiltinOperator of TFLite's schema (schema.fbs, as ai_edge_litert 2.3.0's schema_py_generated has it), codes
// 0..209: the names the Python interpreter gives its ops (`_get_ops_details`). The C API has no function that names a
// code, so the table is here; a newer library's code past its end is named "BUILTIN_<code>" (docs/native.md).
const char* const kBuiltinNames[] = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE",
    "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP", "L2_NORMALIZATION", "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D", "MUL", "RELU",
    "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH",
    "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL", "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB",
    "DIV", "SQUEEZE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN", "EXP", "TOPK_V2",
    "SPLIT", "LOG_SOFTMAX", "DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU", "MAXIMUM", "ARG_MAX",
    "MINIMUM", "LESS", "NEG", "PADV2", "GREATER", "GREATER_EQUAL", "LESS_EQUAL", "SELECT", "SLICE", "SIN",
    "TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL", "NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT",
    "SHAPE", "POW", "ARG_MIN", "FAKE_QUANT", "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR", "ONE_HOT",
    "LOGICAL_AND", "LOGICAL_NOT", "UNPACK", "REDUCE_MIN", "FLOOR_DIV", "REDUCE_ANY", "SQUARE", "ZEROS_LIKE", "FILL",
    "FLOOR_MOD", "RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU", "SQUARED_DIFFERENCE", "MIRROR_PAD", "ABS",
    "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2", "ADD_N", "GATHER_ND", "COS", "WHERE", "RANK", "ELU",
    "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE", "MATRIX_SET_DIAG", "ROUND", "HARD_SWISH", "IF", "WHILE",
    "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2", "DENSIFY", "SEGMENT_SUM",
    "BATCH_MATMUL", "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D",
    "IMAG", "REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "REDUCE_ALL",
    "CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "BROADCAST_ARGS", "RANDOM_STANDARD_NORMAL",
    "BUCKETIZE", "RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE", "RELU_0_TO_1",
    "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2", "UNSORTED_SEGMENT_MIN", "SIGN",
    "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC", "STABLEHLO_ADD", "STABLEHLO_DIVIDE",
    "STABLEHLO_MULTIPLY", "STABLEHLO_MAXIMUM", "STABLEHLO_RESHAPE", "STABLEHLO_CLAMP", "STABLEHLO_CONCATENATE",
    "STABLEHLO_BROADCAST_IN_DIM", "STABLEHLO_CONVOLUTION", "STABLEHLO_SLICE", "STABLEHLO_CUSTOM_CALL",
    "STABLEHLO_REDUCE", "STABLEHLO_ABS", "STABLEHLO_AND", "STABLEHLO_COSINE", "STABLEHLO_EXPONENTIAL",
    "STABLEHLO_FLOOR", "STABLEHLO_LOG", "STABLEHLO_MINIMUM", "STABLEHLO_NEGATE", "STABLEHLO_OR", "STABLEHLO_POWER",
    "STABLEHLO_REMAINDER", "STABLEHLO_RSQRT", "STABLEHLO_SELECT", "STABLEHLO_SUBTRACT", "STABLEHLO_TANH",
    "STABLEHLO_SCATTER", "STABLEHLO_COMPARE", "STABLEHLO_CONVERT", "STABLEHLO_DYNAMIC_SLICE",
    "STABLEHLO_DYNAMIC_UPDATE_SLICE", "STABLEHLO_PAD", "STABLEHLO_IOTA", "STABLEHLO_DOT_GENERAL",
    "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SORT", "STABLEHLO_WHILE", "STABLEHLO_GATHER", "STABLEHLO_TRANSPOSE",
    "DILATE", "STABLEHLO_RNG_BIT_GENERATOR", "REDUCE_WINDOW", "STABLEHLO_COMPOSITE", "STABLEHLO_SHIFT_LEFT",
    "STABLEHLO_CBRT", "STABLEHLO_CASE",
};

}  // namespace

std::string builtin_operator_name(int code) {
  const int count = static_cast<int>(sizeof kBuiltinNames / sizeof kBuiltinNames[0]);
  return code >= 0 && code < count ? kBuiltinNames[code] : "";
}

std::string delegate_label(const std::string& used) {
  const bool library = used.find('/') != std::string::npos || ends_with(used, ".so") ||
                       used.find(".so.") != std::string::npos;
  if (!library) return to_lower(used);
  const std::size_t slash = used.rfind('/');
  return slash == std::string::npos ? used : used.substr(slash + 1);
}

namespace {

// Model node -> the partition (delegate kernel, numbered in node order) that took it.
std::map<int, int> taken_by_delegates(const Graph& graph) {
  std::map<int, int> producer;  // tensor -> the model node writing it (the last one, like a Python dict)
  for (const auto& node : graph.nodes)
    if (!node.delegate_kernel())
      for (int t : node.outputs) producer[t] = node.index;
  std::map<int, int> taken;
  int partition = 0;
  for (const auto& kernel : graph.nodes) {
    if (!kernel.delegate_kernel()) continue;
    const std::set<int> boundary(kernel.inputs.begin(), kernel.inputs.end());
    std::vector<int> pending(kernel.outputs.begin(), kernel.outputs.end());
    while (!pending.empty()) {
      const int tensor = pending.back();
      pending.pop_back();
      const auto found = producer.find(tensor);
      if (found == producer.end() || taken.count(found->second)) continue;
      taken[found->second] = partition;
      for (int t : graph.nodes[static_cast<std::size_t>(found->second)].inputs)
        if (t >= 0 && !boundary.count(t)) pending.push_back(t);
    }
    ++partition;
  }
  return taken;
}

Json placement_node(const GraphNode& node, const std::string& backend, int partition) {
  Json out = Json::object();
  out.set("name", node.name);
  out.set("op", node.op);
  out.set("backend", backend);
  out.set("partition", partition);
  return out;
}

}  // namespace

Json tflite_placement(const Graph& graph, const std::string& used, const std::string& first_choice) {
  const std::map<int, int> taken = taken_by_delegates(graph);
  const std::string label = delegate_label(used);
  const bool on_delegate = label != "cpu" && label != "ref";
  const std::string kernels = on_delegate ? "cpu" : label;
  std::set<int> partitions;
  for (const auto& entry : taken) partitions.insert(entry.second);
  // The interpreter's own kernels are numbered after the delegate's partitions, one per run of consecutive nodes.
  int cpu_partition = static_cast<int>(partitions.size()) - 1;
  int previous = -2;
  Json nodes = Json::array();
  for (const auto& node : graph.nodes) {
    if (node.delegate_kernel()) continue;
    const auto found = taken.find(node.index);
    if (found != taken.end()) {
      nodes.push(placement_node(node, label, found->second));
      previous = -2;
      continue;
    }
    if (previous + 1 != node.index) ++cpu_partition;
    previous = node.index;
    nodes.push(placement_node(node, kernels, cpu_partition));
  }
  Json out = Json::object();
  out.set("source", "litert-graph");
  out.set("first_choice", delegate_label(first_choice));
  out.set("nodes", nodes);
  return out;
}

Json node_times_json(const std::vector<NodeTimes>& nodes) {
  Json list = Json::array();
  for (const auto& node : nodes) {
    Json out = Json::object();
    out.set("name", node.name);
    out.set("op", node.op);
    out.set("backend", node.backend);
    out.set("duration_ns", Json::int_array(node.duration_ns));
    list.push(out);
  }
  return list;
}

}  // namespace eb

// The harness as a function: run one benchmark and write its JSON-line events (main.cpp is a thin wrapper).
#pragma once

#include <string>

#include "cli.hpp"
#include "json.hpp"

namespace eb {

// Writes one JSON document per line to a file descriptor, whole lines at a time (the parent splits on "\n").
class Events {
 public:
  explicit Events(int fd) : fd_(fd) {}
  void send(const Json& event);
  void progress(const char* phase, int64_t runs, double elapsed_s);
  void error(int code, const std::string& message);
  bool ok() const { return ok_; }

 private:
  int fd_;
  bool ok_ = true;
};

// The worker's bench result (agent/worker.py run_bench): inputs, outputs, backend, feeds, timing, samples,
// wall_ns, memory. Throws eb::Error.
Json run_benchmark(const CommandLine& cl, Events& events);

// The whole program: parse, run, report; returns the exit code.
int harness_main(int argc, char** argv);

}  // namespace eb

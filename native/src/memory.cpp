#include "memory.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace eb {

std::optional<int64_t> status_bytes(const std::string& field, const std::string& status_path) {
  std::ifstream status(status_path);
  if (!status) return std::nullopt;
  std::string line;
  const std::string prefix = field + ":";
  while (std::getline(status, line)) {
    if (line.compare(0, prefix.size(), prefix) == 0) {
      char* end = nullptr;
      const long long kib = std::strtoll(line.c_str() + prefix.size(), &end, 10);
      if (end == line.c_str() + prefix.size()) return std::nullopt;
      return static_cast<int64_t>(kib) * 1024;
    }
  }
  return std::nullopt;
}

bool reset_peak() {
  FILE* clear_refs = std::fopen("/proc/self/clear_refs", "w");
  if (!clear_refs) return false;
  const bool written = std::fputs("5", clear_refs) >= 0;
  const bool closed = std::fclose(clear_refs) == 0;  // the kernel applies the write on flush
  return written && closed;
}

}  // namespace eb

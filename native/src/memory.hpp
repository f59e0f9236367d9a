// Resident memory of this process, as agent/memory.py reads it: VmRSS and the high-water mark VmHWM from
// /proc/self/status, and "5" written to /proc/self/clear_refs to reset the mark between phases (Linux >= 4.0).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace eb {

std::optional<int64_t> status_bytes(const std::string& field, const std::string& status_path = "/proc/self/status");
inline std::optional<int64_t> current_rss() { return status_bytes("VmRSS"); }
inline std::optional<int64_t> peak_rss() { return status_bytes("VmHWM"); }
bool reset_peak();

}  // namespace eb

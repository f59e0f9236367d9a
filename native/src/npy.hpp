// A minimal reader and writer of NumPy's .npy format (versions 1.0, 2.0 and 3.0): one array, C order or 1-D.
#pragma once

#include <string>

#include "common.hpp"

namespace eb {

// Reads one array; throws Error(kExitBadInput, ...) naming what is wrong with the file.
Array read_npy(const std::string& path);
// Parses a .npy file's bytes (read_npy's work; separated for tests).
Array parse_npy(const std::string& bytes, const std::string& what);
// Writes a version 1.0 .npy file (little-endian, C order); throws Error(kExitInternal) on I/O failure.
void write_npy(const std::string& path, const Array& array);
std::string npy_bytes(const Array& array);

// "<f4", "|u1", "|b1", ... for a dtype; and back (any byte order; kUnknown if unsupported).
std::string npy_descr(DType dtype);
DType parse_npy_descr(const std::string& descr, bool* big_endian);

// numpy.can_cast(from, to, casting="same_kind"), and the cast itself (element-wise, C semantics).
bool can_cast_same_kind(DType from, DType to);
Array cast_array(const Array& array, DType to);

}  // namespace eb

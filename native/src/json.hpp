// A minimal JSON value for writing events: insertion-ordered objects, exact 64-bit integers, shortest
// round-trip doubles (NaN and infinities become null, which JSON has no other way to say).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace eb {

class Json {
 public:
  enum class Kind { kNull, kBool, kInt, kDouble, kString, kArray, kObject, kRaw };

  Json() = default;  // null
  Json(std::nullptr_t) {}
  Json(bool value) : kind_(Kind::kBool), int_(value ? 1 : 0) {}
  Json(int value) : kind_(Kind::kInt), int_(value) {}
  Json(long value) : kind_(Kind::kInt), int_(value) {}
  Json(long long value) : kind_(Kind::kInt), int_(value) {}
  Json(unsigned value) : kind_(Kind::kInt), int_(value) {}
  Json(unsigned long value) : kind_(Kind::kInt), int_(static_cast<int64_t>(value)) {}
  Json(unsigned long long value) : kind_(Kind::kInt), int_(static_cast<int64_t>(value)) {}
  Json(double value) : kind_(Kind::kDouble), double_(value) {}
  Json(const char* value) : kind_(Kind::kString), string_(value) {}
  Json(std::string value) : kind_(Kind::kString), string_(std::move(value)) {}

  static Json array() { Json j; j.kind_ = Kind::kArray; return j; }
  static Json object() { Json j; j.kind_ = Kind::kObject; return j; }
  // Text that is already JSON (large integer arrays are serialised once, not held as a million nodes).
  static Json raw(std::string text) { Json j; j.kind_ = Kind::kRaw; j.string_ = std::move(text); return j; }
  static Json int_array(const std::vector<int64_t>& values);
  template <class T>
  static Json optional(const T& value) { return value ? Json(*value) : Json(); }

  Kind kind() const { return kind_; }
  Json& push(Json value);                          // arrays
  Json& set(const std::string& key, Json value);  // objects: replaces an existing key, else appends
  const Json* find(const std::string& key) const;
  std::size_t size() const { return kind_ == Kind::kObject ? members_.size() : items_.size(); }
  const Json& at(std::size_t i) const { return items_.at(i); }
  int64_t as_int() const { return int_; }
  double as_double() const { return kind_ == Kind::kInt ? static_cast<double>(int_) : double_; }
  bool as_bool() const { return int_ != 0; }
  const std::string& as_string() const { return string_; }

  std::string dump() const;
  void dump_to(std::string& out) const;

 private:
  Kind kind_ = Kind::kNull;
  int64_t int_ = 0;
  double double_ = 0.0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

void json_escape(const std::string& text, std::string& out);
std::string json_double(double value);

}  // namespace eb

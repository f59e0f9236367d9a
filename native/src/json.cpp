#include "json.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#if defined(__has_include)
#if __has_include(<charconv>)
#include <charconv>
#endif
#endif

namespace eb {

Json Json::int_array(const std::vector<int64_t>& values) {
  std::string text;
  text.reserve(values.size() * 9 + 2);
  text += '[';
  char buffer[24];
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) text += ',';
    const int n = std::snprintf(buffer, sizeof buffer, "%lld", static_cast<long long>(values[i]));
    text.append(buffer, static_cast<std::size_t>(n));
  }
  text += ']';
  return raw(std::move(text));
}

Json& Json::push(Json value) {
  items_.push_back(std::move(value));
  return items_.back();
}

Json& Json::set(const std::string& key, Json value) {
  for (auto& member : members_) {
    if (member.first == key) {
      member.second = std::move(value);
      return member.second;
    }
  }
  members_.emplace_back(key, std::move(value));
  return members_.back().second;
}

const Json* Json::find(const std::string& key) const {
  for (const auto& member : members_)
    if (member.first == key) return &member.second;
  return nullptr;
}

void json_escape(const std::string& text, std::string& out) {
  out += '"';
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through unchanged
        }
    }
  }
  out += '"';
}

std::string json_double(double value) {
  if (!std::isfinite(value)) return "null";
  char buffer[40];
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  std::string text(buffer, result.ptr);
#else
  // The shortest of %.15g .. %.17g that reads back exactly.
  std::string text;
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  text = buffer;
#endif
  // JSON needs a digit on both sides of the point and no bare "inf"; make integral doubles look like floats.
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
  return text;
}

void Json::dump_to(std::string& out) const {
  switch (kind_) {
    case Kind::kNull: out += "null"; break;
    case Kind::kBool: out += int_ ? "true" : "false"; break;
    case Kind::kInt: out += std::to_string(int_); break;
    case Kind::kDouble: out += json_double(double_); break;
    case Kind::kString: json_escape(string_, out); break;
    case Kind::kRaw: out += string_; break;
    case Kind::kArray:
      out += '[';
      for (std::size_t i = 0; i < items_.size(); ++i) {
        if (i) out += ", ";
        items_[i].dump_to(out);
      }
      out += ']';
      break;
    case Kind::kObject:
      out += '{';
      for (std::size_t i = 0; i < members_.size(); ++i) {
        if (i) out += ", ";
        json_escape(members_[i].first, out);
        out += ": ";
        members_[i].second.dump_to(out);
      }
      out += '}';
      break;
  }
}

std::string Json::dump() const {
  std::string out;
  dump_to(out);
  return out;
}

}  // namespace eb

// A minimal test harness for ctest: TEST(name) registers a case, CHECK/CHECK_EQ/CHECK_THROWS record failures.
// `unit_tests` runs every case (or those whose name contains argv[1]) and exits 1 if any failed.
#pragma once

#include <cmath>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace check {

struct Case {
  const char* name;
  std::function<void()> body;
};

inline std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}

inline int& failures() {
  static int count = 0;
  return count;
}

struct Register {
  Register(const char* name, std::function<void()> body) { cases().push_back({name, std::move(body)}); }
};

inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  std::cerr << file << ":" << line << ": FAILED: " << what << "\n";
}

template <class A, class B>
std::string describe(const A& a, const B& b) {
  std::ostringstream out;
  out << a << " != " << b;
  return out.str();
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)
#define TEST(name)                                                                      \
  static void name();                                                                   \
  static check::Register CHECK_CAT(register_, name)(#name, name);                       \
  static void name()

#define CHECK(cond)                                               \
  do {                                                            \
    if (!(cond)) check::fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define CHECK_EQ(a, b)                                                                                \
  do {                                                                                                \
    const auto& check_a = (a);                                                                        \
    const auto& check_b = (b);                                                                        \
    if (!(check_a == check_b))                                                                        \
      check::fail(__FILE__, __LINE__, std::string(#a " == " #b ": ") + check::describe(check_a, check_b)); \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                         \
  do {                                                                                                \
    const double check_a = (a), check_b = (b);                                                        \
    if (!(std::fabs(check_a - check_b) <= (tol)))                                                     \
      check::fail(__FILE__, __LINE__, std::string(#a " ~= " #b ": ") + check::describe(check_a, check_b)); \
  } while (0)

// The statement must throw eb::Error with this exit code and a message containing `needle`.
#define CHECK_ERROR(statement, expected_code, needle)                                                  \
  do {                                                                                                 \
    bool check_thrown = false;                                                                         \
    try {                                                                                              \
      statement;                                                                                       \
    } catch (const eb::Error& check_error) {                                                           \
      check_thrown = true;                                                                             \
      if (check_error.code() != (expected_code))                                                       \
        check::fail(__FILE__, __LINE__, std::string("exit code of `" #statement "`: ") +              \
                                            check::describe(check_error.code(), (expected_code)) +    \
                                            " (" + check_error.what() + ")");                          \
      if (std::string(check_error.what()).find(needle) == std::string::npos)                           \
        check::fail(__FILE__, __LINE__, std::string("message of `" #statement "` lacks '") + (needle) + \
                                            "': " + check_error.what());                               \
    }                                                                                                  \
    if (!check_thrown) check::fail(__FILE__, __LINE__, "`" #statement "` did not throw eb::Error");    \
  } while (0)

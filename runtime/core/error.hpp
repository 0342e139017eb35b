// Errors as exceptions that carry context (file, key, tensor, rank); the CLI turns them into one line.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace orthoshard {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Thrown for wrong user input (bad flag value, missing file, wrong key): exit code 2 at the CLI.
class UsageError : public Error {
 public:
  using Error::Error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// Re-throws the active exception with `context: ` prepended, keeping its type when it is ours.
[[noreturn]] void rethrow_with_context(const std::string& context);

}  // namespace orthoshard

#define OS_CHECK(cond, ...)                                        \
  do {                                                             \
    if (!(cond)) ::orthoshard::fail(__VA_ARGS__);                  \
  } while (0)

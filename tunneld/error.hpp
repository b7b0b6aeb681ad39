// The one exception type for start-up problems (config, files, permissions,
// privileges). It is thrown before any traffic flows, caught once in main(),
// printed as one line and turned into exit code 1. Runtime I/O never throws it.
#pragma once
#include <stdexcept>
#include <string>

namespace tunneld {

class StartupError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

}  // namespace tunneld

// The running node: loads TLS material, binds every listener, runs the I/O
// threads, reloads on SIGHUP, drains on SIGTERM/SIGINT.
#pragma once
#include <memory>

#include "tunneld/config/config.hpp"

namespace tunneld {

class Daemon {
  public:
    // Loads and validates the TLS material and binds all listeners.
    // Throws StartupError on any problem; nothing is listening then.
    explicit Daemon(Config config);
    ~Daemon();

    // Serves until SIGTERM or SIGINT, then stops accepting, waits up to
    // timeouts.shutdown for live connections to end, closes the rest and
    // returns 0. SIGHUP reloads the TLS files: new handshakes use the new
    // material, live connections keep theirs; if the new files are invalid the
    // old material stays and the error is logged.
    int run();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tunneld

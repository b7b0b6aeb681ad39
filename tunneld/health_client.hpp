// `tunneld health --peer FILE [--path P]`: asks the running daemon's health
// endpoint (health.listen of FILE; a wildcard address is asked on loopback).
#pragma once
#include <ostream>
#include <string>

namespace tunneld {

// GETs `path` and prints: for check paths (/readiness, /primary, ...) one line
// "readiness: ok" or "readiness: FAILED (503): <problems>"; for /status and
// /metrics the body as served. Returns 0 for HTTP 200, 1 for anything else,
// including a daemon that cannot be reached (then says so and how to start it).
int run_health(const std::string& config_path, const std::string& path, std::ostream& out, std::ostream& err);

}  // namespace tunneld

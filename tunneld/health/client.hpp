// `tunneld health --peer FILE [--path P]`: asks the running daemon's health
// endpoint (health.listen of FILE; a wildcard address is asked on loopback).
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

#include "tunneld/config/duration.hpp"

namespace tunneld {

// GETs `path` and prints: for check paths (/readiness, /primary, ...) one line
// "readiness: ok" or "readiness: FAILED (503): <problems>"; for /status and
// /metrics the body as served. Returns 0 for HTTP 200, 1 for anything else,
// including a daemon that cannot be reached (then says so and how to start it).
// With `wait` > 0 it asks again until the answer is 200 or `wait` has passed
// (for scripts: `--wait 30` after starting a standby).
int run_health(const std::string& config_path, const std::string& path, std::ostream& out,
               std::ostream& err, Duration wait = Duration(0));

// `tunneld reload --peer FILE [--pid N]`: sends SIGHUP to the daemon (pid from
// --pid or $MAINPID, said by `pid_source`; with pid 0 the one its /status
// reports, only if that process holds the health listener) and only if /proc
// shows a tunneld running FILE (daemon_pid.hpp), and waits, through the health
// endpoint, until that reload has finished (after the daemon's READY=1).
// 0 when it succeeded; 1 with the daemon's reason when it failed, when nothing
// finished within `timeout`, or when there is no health endpoint to confirm with.
// It is the unit's ExecReload, so `systemctl reload` is truthful.
int run_reload(const std::string& config_path, std::int64_t pid, const std::string& pid_source,
               Duration timeout, std::ostream& out, std::ostream& err);

}  // namespace tunneld

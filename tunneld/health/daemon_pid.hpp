// Which process `tunneld reload` may signal. The pid it is told (--pid,
// $MAINPID, or what answers GET /status on health.listen, which any local user
// can bind while the daemon is down) is only signalled when /proc shows it is
// a tunneld running this very config: a wrong pid would SIGHUP a stranger, and
// kill(-1) every process on the host.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tunneld {

// What /proc says about one process.
struct ProcessFacts {
    bool exists = false;            // /proc/PID is there
    std::string exe;                // /proc/PID/exe's target; "" when unreadable
    std::vector<std::string> argv;  // /proc/PID/cmdline
    std::string cwd;                // /proc/PID/cwd's target (relative --peer paths)
};
ProcessFacts read_process(std::int64_t pid);

// Why `pid` is not provably the daemon of `config_path`, or "" when it is: in
// (1, INT32_MAX] (never init, never a negative or wrapped pid), alive, its
// executable is named tunneld (" (deleted)" after a package upgrade is fine),
// and its command line has --peer naming the same file as `config_path` (both
// resolved: relative to the process's cwd, symlinks followed). Pure apart
// from resolving paths.
std::string daemon_pid_problem(std::int64_t pid, const ProcessFacts& facts,
                               const std::string& config_path);

}  // namespace tunneld

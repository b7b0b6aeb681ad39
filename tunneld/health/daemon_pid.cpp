#include "tunneld/health/daemon_pid.hpp"

#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "tunneld/base/printable.hpp"

namespace tunneld {

namespace fs = std::filesystem;

namespace {

std::string link_target(const std::string& path) {
    std::error_code ec;
    auto t = fs::read_symlink(path, ec);
    return ec ? "" : t.string();
}

// The file a path names, for comparing: symlinks and ".." resolved as far as
// the file system allows.
std::string resolved(const fs::path& p) {
    std::error_code ec;
    auto r = fs::weakly_canonical(p, ec);
    return ec ? p.lexically_normal().string() : r.string();
}

}  // namespace

ProcessFacts read_process(std::int64_t pid) {
    ProcessFacts f;
    if (pid <= 0 || pid > INT_MAX) return f;
    const std::string dir = "/proc/" + std::to_string(pid);
    std::error_code ec;
    f.exists = fs::exists(dir, ec);
    if (!f.exists) return f;
    f.exe = link_target(dir + "/exe");
    f.cwd = link_target(dir + "/cwd");
    std::ifstream in(dir + "/cmdline", std::ios::binary);
    std::stringstream all;
    all << in.rdbuf();
    std::string arg;
    for (char c : all.str()) {
        if (c == '\0') {
            f.argv.push_back(arg);
            arg.clear();
        } else {
            arg += c;
        }
    }
    if (!arg.empty()) f.argv.push_back(arg);
    return f;
}

std::string daemon_pid_problem(std::int64_t pid, const ProcessFacts& facts,
                               const std::string& config_path) {
    const std::string which = "pid " + std::to_string(pid);
    if (pid <= 1 || pid > INT_MAX)
        return which + " is not a daemon's pid (it must be in 2.." + std::to_string(INT_MAX) + ")";
    if (!facts.exists) return which + " does not exist";
    if (facts.exe.empty())
        return which + ": cannot read /proc/" + std::to_string(pid) +
               "/exe (run as root or as the daemon's user)";
    std::string exe = facts.exe;
    if (exe.ends_with(" (deleted)")) exe.resize(exe.size() - 10);
    if (fs::path(exe).filename() != "tunneld")
        return which + " is " + printable(exe, 256) + ", not tunneld";
    const std::string wanted = resolved(fs::absolute(config_path));
    for (std::size_t i = 0; i < facts.argv.size(); ++i) {
        std::string named;
        if (facts.argv[i] == "--peer" && i + 1 < facts.argv.size())
            named = facts.argv[i + 1];
        else if (facts.argv[i].starts_with("--peer="))
            named = facts.argv[i].substr(7);
        if (named.empty()) continue;
        fs::path p(named);
        if (p.is_relative()) {
            if (facts.cwd.empty()) continue;  // cannot tell where it points
            p = fs::path(facts.cwd) / p;
        }
        if (resolved(p) == wanted) return "";
    }
    return which + " is a tunneld, but not one started with --peer " + config_path;
}

}  // namespace tunneld

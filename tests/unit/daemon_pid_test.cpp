// Which pid `tunneld reload` may signal: only a tunneld whose command line
// names this config, never a pid outside 2..INT32_MAX (kill(-1) would reach
// every process, a wrapped 2^32+N a stranger).
#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <filesystem>

#include "tunneld/health/daemon_pid.hpp"

namespace tunneld {
namespace {

ProcessFacts daemon(std::vector<std::string> argv, std::string exe = "/usr/bin/tunneld",
                    std::string cwd = "/") {
    return ProcessFacts{true, std::move(exe), std::move(argv), std::move(cwd)};
}

TEST(DaemonPid, ATunneldRunningThisConfigMayBeSignalled) {
    EXPECT_EQ(daemon_pid_problem(812, daemon({"tunneld", "--peer", "/etc/tunneld/a.yaml"}),
                                 "/etc/tunneld/a.yaml"),
              "");
    EXPECT_EQ(daemon_pid_problem(812, daemon({"tunneld", "run", "--peer=/etc/tunneld/a.yaml"}),
                                 "/etc/tunneld/a.yaml"),
              "");
    // Upgraded under it: the old binary shows as deleted.
    EXPECT_EQ(
        daemon_pid_problem(
            812, daemon({"tunneld", "--peer", "/etc/tunneld/a.yaml"}, "/usr/bin/tunneld (deleted)"),
            "/etc/tunneld/a.yaml"),
        "");
    // Started with a relative path from its own directory.
    EXPECT_EQ(daemon_pid_problem(
                  812, daemon({"tunneld", "--peer", "a.yaml"}, "/usr/bin/tunneld", "/etc/tunneld"),
                  "/etc/tunneld/./a.yaml"),
              "");
}

TEST(DaemonPid, PidsOutsideTwoToInt32MaxAreRefusedWhateverTheProcessLooksLike) {
    auto good = daemon({"tunneld", "--peer", "/etc/tunneld/a.yaml"});
    for (std::int64_t pid :
         {std::int64_t{-1}, std::int64_t{0}, std::int64_t{1}, std::int64_t{4294967295},
          std::int64_t{4294967296} + 812, std::int64_t{INT_MAX} + 1}) {
        auto p = daemon_pid_problem(pid, good, "/etc/tunneld/a.yaml");
        EXPECT_NE(p.find("is not a daemon's pid"), std::string::npos) << pid << ": " << p;
    }
}

TEST(DaemonPid, AnotherProgramAnotherConfigOrAGoneProcessIsRefused) {
    EXPECT_NE(daemon_pid_problem(
                  812, daemon({"python3", "--peer", "/etc/tunneld/a.yaml"}, "/usr/bin/python3.11"),
                  "/etc/tunneld/a.yaml")
                  .find("is /usr/bin/python3.11, not tunneld"),
              std::string::npos);
    EXPECT_NE(daemon_pid_problem(812, daemon({"tunneld", "--peer", "/etc/tunneld/b.yaml"}),
                                 "/etc/tunneld/a.yaml")
                  .find("not one started with --peer /etc/tunneld/a.yaml"),
              std::string::npos);
    EXPECT_NE(daemon_pid_problem(812, daemon({"tunneld", "check", "/etc/tunneld/a.yaml"}),
                                 "/etc/tunneld/a.yaml"),
              "");
    EXPECT_NE(daemon_pid_problem(812, ProcessFacts{}, "/etc/tunneld/a.yaml").find("does not exist"),
              std::string::npos);
    EXPECT_NE(daemon_pid_problem(812, daemon({"tunneld", "--peer", "/etc/tunneld/a.yaml"}, ""),
                                 "/etc/tunneld/a.yaml")
                  .find("cannot read /proc/812/exe"),
              std::string::npos);
}

TEST(DaemonPid, ReadsThisProcessFromProc) {
    auto me = read_process(::getpid());
    EXPECT_TRUE(me.exists);
    EXPECT_EQ(std::filesystem::path(me.exe).filename(), "unit_tests");
    ASSERT_FALSE(me.argv.empty());
    EXPECT_FALSE(me.cwd.empty());
    EXPECT_FALSE(read_process(4294967295).exists);
    EXPECT_FALSE(read_process(-1).exists);
}

}  // namespace
}  // namespace tunneld

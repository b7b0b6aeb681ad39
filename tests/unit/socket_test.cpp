#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tunneld/config/key_file.hpp"
#include "tunneld/net/socket_options.hpp"

namespace tunneld {
namespace {

int get(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    getsockopt(fd, level, name, &v, &len);
    return v;
}

TEST(SocketOptions, PublicSocketGetsKeepaliveUserTimeoutAndNodelay) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    KeepaliveConfig k;
    k.idle = std::chrono::seconds(7);
    k.interval = std::chrono::seconds(3);
    k.count = 5;
    k.user_timeout = std::chrono::milliseconds(25'000);
    EXPECT_TRUE(apply_public_options(fd, k));
    EXPECT_EQ(get(fd, IPPROTO_TCP, TCP_NODELAY), 1);
    EXPECT_EQ(get(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
    EXPECT_EQ(get(fd, IPPROTO_TCP, TCP_KEEPIDLE), 7);
    EXPECT_EQ(get(fd, IPPROTO_TCP, TCP_KEEPINTVL), 3);
    EXPECT_EQ(get(fd, IPPROTO_TCP, TCP_KEEPCNT), 5);
    EXPECT_EQ(get(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 25'000);
    close(fd);
}

TEST(SocketOptions, LocalSocketGetsNodelayOnly) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_TRUE(apply_local_options(fd));
    EXPECT_EQ(get(fd, IPPROTO_TCP, TCP_NODELAY), 1);
    EXPECT_EQ(get(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    close(fd);
}

TEST(SocketOptions, ReportsFailureOnBadDescriptor) {
    auto done = apply_public_options(-1, KeepaliveConfig{});
    ASSERT_FALSE(done);
    EXPECT_EQ(done.error().what.rfind("setsockopt TCP_NODELAY: ", 0), 0u) << done.error().what;
}

class KeyFile : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() / ("keyfile-" + std::to_string(getpid()));
        std::filesystem::create_directories(dir_);
        path_ = (dir_ / "node.key").string();
        std::ofstream(path_) << "secret";
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::filesystem::path dir_;
    std::string path_;
};

TEST_F(KeyFile, PrivateKeyPasses) {
    chmod(path_.c_str(), 0600);
    EXPECT_EQ(key_file_problem(path_), "");
}

TEST_F(KeyFile, GroupReadableKeyGivesExactChmod) {
    chmod(path_.c_str(), 0640);
    EXPECT_EQ(key_file_problem(path_),
              path_ + " is group/world accessible (mode 0640): run chmod 600 " + path_);
}

TEST_F(KeyFile, MissingKeyNamesPath) {
    EXPECT_EQ(key_file_problem(path_ + ".missing"),
              path_ + ".missing: cannot read private key: No such file or directory");
}

TEST_F(KeyFile, DirectoryIsNotAKey) {
    EXPECT_EQ(key_file_problem(dir_.string()),
              dir_.string() + ": private key is not a regular file");
}

TEST_F(KeyFile, ForeignOwnerGivesChown) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to chown the key to another user";
    chmod(path_.c_str(), 0600);
    ASSERT_EQ(chown(path_.c_str(), 65534, 65534), 0);
    // root reads any key: no advice that would take the key away from its user.
    EXPECT_EQ(key_file_problem(path_), "");
    // Judged for the user the daemon runs as (tunneld check as root, for User=tunneld).
    auto p = key_file_problem(path_, uid_t{4242});
    EXPECT_NE(p.find("is owned by nobody, so 4242 (the user tunneld runs as) cannot read it"),
              std::string::npos)
        << p;
    EXPECT_NE(p.find("run chown 4242 " + path_), std::string::npos) << p;
    EXPECT_EQ(key_file_problem(path_, uid_t{65534}), "");  // its owner
}

}  // namespace
}  // namespace tunneld

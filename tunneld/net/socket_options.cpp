#include "tunneld/net/socket_options.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace tunneld {
namespace {

Result<void> set(int fd, int level, int name, int value, const char* what) {
    if (::setsockopt(fd, level, name, &value, sizeof value) == 0) return {};
    return Problem{std::string("setsockopt ") + what + ": " + std::strerror(errno)};
}

int seconds(Duration d) {
    auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
    return s < 1 ? 1 : static_cast<int>(s);
}

}  // namespace

Result<void> apply_local_options(int fd) {
    return set(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
}

Result<void> apply_public_options(int fd, const KeepaliveConfig& k) {
    // Every option is tried; the first failure is the one reported.
    for (auto done : {set(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"),
                      set(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE"),
                      set(fd, IPPROTO_TCP, TCP_KEEPIDLE, seconds(k.idle), "TCP_KEEPIDLE"),
                      set(fd, IPPROTO_TCP, TCP_KEEPINTVL, seconds(k.interval), "TCP_KEEPINTVL"),
                      set(fd, IPPROTO_TCP, TCP_KEEPCNT, k.count, "TCP_KEEPCNT"),
                      set(fd, IPPROTO_TCP, TCP_USER_TIMEOUT,
                          static_cast<int>(k.user_timeout.count()), "TCP_USER_TIMEOUT")})
        if (!done) return done;
    return {};
}

}  // namespace tunneld

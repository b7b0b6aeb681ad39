// Socket options for the two kinds of sockets tunneld owns.
#pragma once
#include <string>

#include "tunneld/config/config.hpp"

namespace tunneld {

// Local side (postgres <-> tunneld): TCP_NODELAY, so small replication
// acknowledgements are not delayed. Returns "" or a description of the failure.
// Not for unix sockets.
std::string apply_local_options(int fd);

// Public side (tunneld <-> tunneld): TCP_NODELAY, SO_KEEPALIVE with
// TCP_KEEPIDLE/KEEPINTVL/KEEPCNT, and TCP_USER_TIMEOUT (unless 0), so a dead
// path is noticed within idle + interval*count (or user_timeout for unacked data).
// Returns "" or a description of the failure.
std::string apply_public_options(int fd, const KeepaliveConfig& keepalive);

}  // namespace tunneld

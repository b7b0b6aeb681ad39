// Socket options for the two kinds of sockets tunneld owns.
#pragma once

#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"

namespace tunneld {

// Local side (postgres <-> tunneld): TCP_NODELAY, so small replication
// acknowledgements are not delayed. Not for unix sockets.
Result<void> apply_local_options(int fd);

// Public side (tunneld <-> tunneld): TCP_NODELAY, SO_KEEPALIVE with
// TCP_KEEPIDLE/KEEPINTVL/KEEPCNT, and TCP_USER_TIMEOUT (unless 0), so a dead
// path is noticed within idle + interval*count (or user_timeout for unacked data).
// Fails with the first option the kernel refused ("setsockopt TCP_KEEPCNT: ...").
Result<void> apply_public_options(int fd, const KeepaliveConfig& keepalive);

}  // namespace tunneld

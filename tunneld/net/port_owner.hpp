// Who holds a listen address: for `tunneld check`, which must say "already in
// use by nginx (pid 812)" instead of letting the daemon fail at start.
#pragma once
#include <optional>
#include <string>

#include "tunneld/config/endpoint.hpp"

namespace tunneld {

struct PortOwner {
    int pid = 0;          // 0 when /proc does not tell (another user's process, a container)
    std::string command;  // /proc/PID/comm
    std::string cmdline;  // /proc/PID/cmdline, NULs as spaces
};

// Tries to bind a TCP socket to `ep` (SO_REUSEADDR, like the daemon). Returns
// nullopt when the address is free (or cannot be tested: then the daemon's own
// start reports it); otherwise who listens there, as far as /proc says.
std::optional<PortOwner> listen_address_taken(const Endpoint& ep);

}  // namespace tunneld

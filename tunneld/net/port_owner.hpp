// Who holds a listen address: for `tunneld check`, which must say "already in
// use by nginx (pid 812)" instead of letting the daemon fail at start.
#pragma once
#include <optional>
#include <string>
#include <vector>

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

// Pids of the processes that hold a listening TCP socket on `port` (IPv4 or
// IPv6), as far as /proc shows them to this user (root sees all). Empty when
// nobody listens there or the holder is hidden.
std::vector<int> listening_pids(std::uint16_t port);

}  // namespace tunneld

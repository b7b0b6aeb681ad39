// Network endpoints as written in the config.
//   "127.0.0.1:5432", "[::]:8765", "primary.example.net:8765"  -> host + port
//   "unix:/var/run/postgresql/.s.PGSQL.5432"                    -> unix socket path
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tunneld/error.hpp"

namespace tunneld {

struct Endpoint {
    std::string host;  // literal address or DNS name, without brackets; empty for unix
    std::uint16_t port = 0;
    std::string unix_path;  // non-empty for a unix socket

    bool is_unix() const { return !unix_path.empty(); }
    // "host:port" ("[v6]:port" for IPv6 literals) or "unix:/path".
    std::string to_string() const;
};

// Parses `text`. With allow_unix=false a "unix:" endpoint is refused.
// Fails with what is wrong (missing port, port 0 or > 65535, empty host).
Result<Endpoint> parse_endpoint(std::string_view text, bool allow_unix);

// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback(const Endpoint& ep);

}  // namespace tunneld

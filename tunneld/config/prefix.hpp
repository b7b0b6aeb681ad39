// IP prefixes as written in firewall allow lists: "203.0.113.0/24",
// "2001:db8::/32", or a single address ("10.0.0.7" = /32, "::1" = /128).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tunneld/error.hpp"

namespace tunneld {

struct Prefix {
    bool v6 = false;
    std::array<std::uint8_t, 16> addr{};  // network address; first 4 bytes for IPv4
    int length = 0;                       // prefix length in bits

    std::size_t bytes() const { return v6 ? 16 : 4; }
    std::string to_string() const;
    bool operator==(const Prefix&) const = default;
};

// Parses `text`. Refuses host bits set past the prefix ("10.0.0.1/24": did you
// mean 10.0.0.0/24?), lengths out of range, and anything that is not an address.
Result<Prefix> parse_prefix(std::string_view text);

// The prefix of one address.
Prefix host_prefix(bool v6, const std::uint8_t* addr);

}  // namespace tunneld

#include "tunneld/config/prefix.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace tunneld {

std::string Prefix::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(v6 ? AF_INET6 : AF_INET, addr.data(), buf, sizeof buf);
    return std::string(buf) + "/" + std::to_string(length);
}

Prefix host_prefix(bool v6, const std::uint8_t* addr) {
    Prefix p;
    p.v6 = v6;
    p.length = v6 ? 128 : 32;
    std::memcpy(p.addr.data(), addr, p.bytes());
    return p;
}

Result<Prefix> parse_prefix(std::string_view text) {
    auto slash = text.find('/');
    std::string address(text.substr(0, slash));
    Prefix p;
    if (inet_pton(AF_INET, address.c_str(), p.addr.data()) == 1) {
        p.v6 = false;
    } else if (inet_pton(AF_INET6, address.c_str(), p.addr.data()) == 1) {
        p.v6 = true;
    } else {
        return Problem{"'" + std::string(text) +
                       "' is not an IP address or prefix (as in 203.0.113.0/24)"};
    }
    int max = p.v6 ? 128 : 32;
    p.length = max;
    if (slash != std::string_view::npos) {
        auto len = text.substr(slash + 1);
        auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), p.length);
        if (len.empty() || ec != std::errc() || end != len.data() + len.size() || p.length < 0 ||
            p.length > max) {
            return Problem{"'" + std::string(text) + "': prefix length must be 0 to " +
                           std::to_string(max)};
        }
    }
    Prefix network = p;
    for (int bit = p.length; bit < max; ++bit) network.addr[bit / 8] &= ~(0x80 >> (bit % 8));
    if (network.addr != p.addr) {
        return Problem{"'" + std::string(text) + "' has host bits set; did you mean " +
                       network.to_string() + "?"};
    }
    return p;
}

}  // namespace tunneld

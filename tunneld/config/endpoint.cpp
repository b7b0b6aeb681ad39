#include "tunneld/config/endpoint.hpp"

#include <algorithm>
#include <array>

#include "tunneld/config/prefix.hpp"

#include <charconv>

namespace tunneld {

std::string Endpoint::to_string() const {
    if (is_unix()) return "unix:" + unix_path;
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

Result<Endpoint> parse_endpoint(std::string_view text, bool allow_unix) {
    Endpoint ep;
    if (text.starts_with("unix:")) {
        if (!allow_unix) {
            return Problem{"a unix socket is not allowed here"};
        }
        ep.unix_path = std::string(text.substr(5));
        if (ep.unix_path.empty() || ep.unix_path[0] != '/') {
            return Problem{
                "unix socket path must be absolute, as in unix:/var/run/postgresql/.s.PGSQL.5432"};
        }
        return ep;
    }
    std::string_view host, port;
    if (text.starts_with("[")) {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return Problem{"expected [IPv6]:port"};
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            return Problem{"expected host:port"};
        }
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) {
            return Problem{"IPv6 addresses must be written in brackets, as in [::1]:8765"};
        }
    }
    if (host.empty()) {
        return Problem{"host is empty"};
    }
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || value == 0 ||
        value > 65535) {
        return Problem{"port must be a number from 1 to 65535"};
    }
    ep.host = std::string(host);
    ep.port = static_cast<std::uint16_t>(value);
    return ep;
}

bool is_loopback(const Endpoint& ep) {
    auto p = parse_prefix(ep.host);
    if (!p) return ep.host == "localhost";
    if (p->v6) {
        static const std::array<std::uint8_t, 16> one{0, 0, 0, 0, 0, 0, 0, 0,
                                                      0, 0, 0, 0, 0, 0, 0, 1};
        return std::equal(one.begin(), one.end(), p->addr.begin());
    }
    return p->addr[0] == 127;
}

}  // namespace tunneld

#include "tunneld/config/yaml_reader.hpp"

#include "tunneld/config/config.hpp"
#include "tunneld/config/prefix.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <filesystem>

namespace tunneld::yaml_config {

using namespace std::chrono_literals;

std::string scalar(MapReader& r, const YAML::Node& n, const std::string& key) {
    if (!n.IsScalar()) r.fail(n, "'" + r.qualified(key) + "' must be a string");
    return n.Scalar();
}

std::string require_string(MapReader& r, const YAML::Node& map, const std::string& key) {
    auto* n = r.find(key);
    if (!n) r.fail(map, "missing required key '" + r.qualified(key) + "'");
    auto s = scalar(r, *n, key);
    if (s.empty()) r.fail(*n, "'" + r.qualified(key) + "' must not be empty");
    return s;
}

Duration duration_value(MapReader& r, const YAML::Node& n, const std::string& key) {
    auto text = scalar(r, n, key);
    auto d = parse_duration(text);
    if (!d)
        r.fail(n, "'" + r.qualified(key) + "': '" + text +
                      "' is not a duration (use a number with ms, s, m or h, as in 30s)");
    return *d;
}

// Every duration has a ceiling: a value like 99999999h would overflow timers
// (and a keepalive or timeout that long is a typo, not a setting).
void read_duration(MapReader& r, const std::string& key, Duration& out, Duration min,
                   Duration max) {
    if (auto* n = r.find(key)) {
        out = duration_value(r, *n, key);
        if (out < min || out > max)
            r.fail(*n, "'" + r.qualified(key) + "' must be from " + format_duration(min) + " to " +
                           format_duration(max));
    }
}

// The groups a client may ask for: elliptic curves and their post-quantum
// hybrids (OpenSSL 3.5 and later), so nobody unauthenticated can make us
// compute a finite-field (ffdhe8192) key exchange.
const std::set<std::string>& allowed_groups() {
    static const std::set<std::string> g{"X25519MLKEM768",
                                         "SecP256r1MLKEM768",
                                         "SecP384r1MLKEM1024",
                                         "X25519",
                                         "X448",
                                         "P-256",
                                         "P-384",
                                         "P-521"};
    return g;
}

void read_int(MapReader& r, const std::string& key, int& out, int min, int max) {
    if (auto* n = r.find(key)) {
        auto text = scalar(r, *n, key);
        std::size_t used = 0;
        long v = 0;
        try {
            v = std::stol(text, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != text.size() || text.empty() || v < min || v > max)
            r.fail(*n, "'" + r.qualified(key) + "' must be a whole number from " +
                           std::to_string(min) + " to " + std::to_string(max));
        out = static_cast<int>(v);
    }
}

Endpoint endpoint_value(MapReader& r, const YAML::Node& n, const std::string& key,
                        bool allow_unix) {
    auto text = scalar(r, n, key);
    auto ep = parse_endpoint(text, allow_unix);
    if (!ep) r.fail(n, "'" + r.qualified(key) + "': '" + text + "': " + ep.error().what);
    return *ep;
}

// One address or a list of them (not empty, no unix sockets).
std::vector<Endpoint> endpoint_list(MapReader& r, const YAML::Node& n, const std::string& key) {
    std::vector<Endpoint> out;
    if (n.IsSequence()) {
        for (const auto& item : n) out.push_back(endpoint_value(r, item, "listen", false));
        if (out.empty()) r.fail(n, "'" + key + "' must not be empty");
    } else {
        out.push_back(endpoint_value(r, n, "listen", false));
    }
    return out;
}

bool bool_value(MapReader& r, const YAML::Node& n, const std::string& key) {
    auto v = scalar(r, n, key);
    if (v != "true" && v != "false") r.fail(n, "'" + key + "' must be true or false");
    return v == "true";
}

std::vector<std::string> identity_list(MapReader& r, const YAML::Node& n, const std::string& key) {
    if (!n.IsSequence())
        r.fail(n, "'" + r.qualified(key) + "' must be a list, as in [primary-1, standby-1]");
    std::vector<std::string> out;
    for (const auto& item : n) {
        if (!item.IsScalar()) r.fail(item, "'" + r.qualified(key) + "' entries must be strings");
        if (!is_valid_identity(item.Scalar()))
            r.fail(item,
                   "'" + r.qualified(key) + "': '" + item.Scalar() +
                       "' is not a valid identity (a DNS name or URI; wildcards are refused)");
        out.push_back(item.Scalar());
    }
    return out;
}

std::string resolve_path(const std::string& config_path, const std::string& p) {
    if (p.empty() || p[0] == '/') return p;
    auto dir = std::filesystem::path(config_path).parent_path();
    return (dir / p).lexically_normal().string();
}

}  // namespace tunneld::yaml_config

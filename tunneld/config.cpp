#include "tunneld/config.hpp"
#include "tunneld/pg_check.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "tunneld/error.hpp"
#include "tunneld/prefix.hpp"

namespace tunneld {
namespace {

// Reads one YAML mapping and remembers which keys were consumed, so that
// every key not read is reported as unknown (with its position).
class MapReader {
  public:
    MapReader(const YAML::Node& node, std::string where, const std::string& file)
        : node_(node), where_(std::move(where)), file_(file) {
        if (!node_.IsMap()) fail(node_, where_ + " must be a mapping");
        // yaml-cpp keeps both entries of a repeated key and find() would silently
        // take the first: a repeated key is an error naming both places.
        std::map<std::string, YAML::Mark> seen;
        for (auto it = node_.begin(); it != node_.end(); ++it) {
            if (!it->first.IsScalar()) fail(it->first, where_ + ": keys must be plain strings");
            auto key = it->first.Scalar();
            auto [at, fresh] = seen.emplace(key, it->first.Mark());
            if (!fresh)
                fail(it->first, "duplicate key '" + qualified(key) + "' (first given at line " +
                                    std::to_string(at->second.line + 1) + ", column " +
                                    std::to_string(at->second.column + 1) + ")");
        }
    }

    const YAML::Node* find(const std::string& key) {
        known_.insert(key);
        for (auto it = node_.begin(); it != node_.end(); ++it) {
            if (it->first.as<std::string>() == key) {
                stash_.push_back(it->second);
                return &stash_.back();
            }
        }
        return nullptr;
    }

    // Throws for any key that was never asked for.
    void finish() {
        for (auto it = node_.begin(); it != node_.end(); ++it) {
            auto key = it->first.as<std::string>();
            if (!known_.count(key)) {
                std::string expected;
                for (auto& k : known_) expected += (expected.empty() ? "" : ", ") + k;
                fail(it->first,
                     "unknown key '" + qualified(key) + "' (expected one of: " + expected + ")");
            }
        }
    }

    std::string qualified(const std::string& key) const {
        return where_.empty() ? key : where_ + "." + key;
    }

    [[noreturn]] void fail(const YAML::Node& at, const std::string& message) const {
        auto mark = at.Mark();
        std::ostringstream out;
        out << file_;
        if (!mark.is_null()) out << ":" << mark.line + 1 << ":" << mark.column + 1;
        out << ": " << message;
        throw StartupError(out.str());
    }

  private:
    YAML::Node node_;
    std::string where_;
    const std::string& file_;
    std::set<std::string> known_;
    std::deque<YAML::Node> stash_;  // a deque: pointers from find() stay valid as more are stashed
};

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
                   Duration max = 24h) {
    if (auto* n = r.find(key)) {
        out = duration_value(r, *n, key);
        if (out < min || out > max)
            r.fail(*n, "'" + r.qualified(key) + "' must be from " + format_duration(min) + " to " +
                           format_duration(max));
    }
}

bool is_loopback(const Endpoint& ep) {
    std::string why;
    auto p = parse_prefix(ep.host, why);
    if (!p) return ep.host == "localhost";
    if (p->v6) {
        static const std::array<std::uint8_t, 16> one{0, 0, 0, 0, 0, 0, 0, 0,
                                                      0, 0, 0, 0, 0, 0, 0, 1};
        return std::equal(one.begin(), one.end(), p->addr.begin());
    }
    return p->addr[0] == 127;
}

// The curves a client may ask for: elliptic-curve groups only, so nobody
// unauthenticated can make us compute a finite-field (ffdhe8192) key exchange.
const std::set<std::string>& allowed_groups() {
    static const std::set<std::string> g{"X25519", "X448", "P-256", "P-384", "P-521"};
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
    std::string why;
    auto ep = parse_endpoint(text, allow_unix, why);
    if (!ep) r.fail(n, "'" + r.qualified(key) + "': '" + text + "': " + why);
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

}  // namespace

bool is_valid_identity(const std::string& name) {
    if (name.empty() || name.size() > 253) return false;
    if (name.find('*') != std::string::npos) return false;
    if (name.find("://") != std::string::npos) {
        auto scheme_end = name.find("://");
        if (scheme_end == 0) return false;
        for (char c : name)
            if (c <= ' ' || c == 0x7f) return false;
        return scheme_end + 3 < name.size();
    }
    if (name.front() == '.' || name.back() == '.' || name.front() == '-') return false;
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.';
        if (!ok) return false;
    }
    return name.find("..") == std::string::npos;
}

Config parse_config(const std::string& text, const std::string& path) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
        throw StartupError(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                           std::to_string(e.mark.column + 1) + ": invalid YAML: " + e.msg);
    }
    if (!root || root.IsNull()) throw StartupError(path + ": the file is empty");

    Config cfg;
    cfg.path = path;
    MapReader top(root, "", path);

    cfg.node = require_string(top, root, "node");
    if (!is_valid_identity(cfg.node))
        top.fail(*top.find("node"),
                 "'node': '" + cfg.node + "' is not a valid identity (letters, digits, '-', '.')");

    auto* tls = top.find("tls");
    if (!tls) top.fail(root, "missing required key 'tls' (ca, cert, key)");
    {
        MapReader r(*tls, "tls", path);
        cfg.tls.ca = resolve_path(path, require_string(r, *tls, "ca"));
        cfg.tls.cert = resolve_path(path, require_string(r, *tls, "cert"));
        cfg.tls.key = resolve_path(path, require_string(r, *tls, "key"));
        if (auto* n = r.find("crl")) cfg.tls.crl = resolve_path(path, scalar(r, *n, "crl"));
        if (auto* n = r.find("groups")) {
            if (!n->IsSequence() || n->size() == 0)
                r.fail(*n, "'tls.groups' must be a non-empty list, as in [X25519, P-256]");
            cfg.tls.groups.clear();
            for (const auto& g : *n) {
                if (!g.IsScalar() || !allowed_groups().count(g.Scalar()))
                    r.fail(g,
                           "'tls.groups': '" + (g.IsScalar() ? g.Scalar() : std::string("?")) +
                               "' is not allowed (choose from X25519, X448, P-256, P-384, P-521)");
                cfg.tls.groups.push_back(g.Scalar());
            }
        }
        r.finish();
    }

    if (auto* in = top.find("inbound")) {
        MapReader r(*in, "inbound", path);
        InboundConfig ic;
        auto* listen = r.find("listen");
        if (!listen) r.fail(*in, "missing required key 'inbound.listen'");
        ic.listen = endpoint_list(r, *listen, "inbound.listen");
        auto* backend = r.find("backend");
        if (!backend) r.fail(*in, "missing required key 'inbound.backend'");
        ic.backend = endpoint_value(r, *backend, "backend", true);
        auto* allow = r.find("allow");
        if (!allow)
            r.fail(*in, "missing required key 'inbound.allow' (peer identities allowed in)");
        ic.allow = identity_list(r, *allow, "allow");
        if (ic.allow.empty())
            r.fail(*allow, "'inbound.allow' is empty: no peer could ever connect");
        r.finish();
        cfg.inbound = std::move(ic);
    }

    if (auto* peers = top.find("peers")) {
        if (!peers->IsSequence()) top.fail(*peers, "'peers' must be a list");
        std::set<std::string> names;
        std::set<std::string> locals;
        for (const auto& p : *peers) {
            MapReader r(p, "peers[]", path);
            PeerConfig pc;
            pc.name = require_string(r, p, "name");
            if (!is_valid_identity(pc.name))
                r.fail(*r.find("name"), "'peers[].name': '" + pc.name +
                                            "' is not a valid identity (a DNS name or URI)");
            if (!names.insert(pc.name).second)
                r.fail(*r.find("name"), "peer '" + pc.name + "' is listed twice");
            auto* connect = r.find("connect");
            if (!connect) r.fail(p, "missing required key 'peers[].connect'");
            pc.connect = endpoint_value(r, *connect, "connect", false);
            auto* local = r.find("local");
            if (!local) r.fail(p, "missing required key 'peers[].local'");
            pc.local = endpoint_value(r, *local, "local", false);
            if (!locals.insert(pc.local.to_string()).second)
                r.fail(*local, "local address " + pc.local.to_string() + " is used twice");
            if (auto* n = r.find("public")) pc.public_local = bool_value(r, *n, "peers[].public");
            if (!pc.public_local && !is_loopback(pc.local))
                r.fail(*local,
                       "'peers[].local' " + pc.local.to_string() +
                           " is not a loopback address: anyone who reaches it gets a connection "
                           "to " +
                           pc.name +
                           " with this node's identity. Use 127.0.0.1, or add "
                           "'public: true' to this peer if that is really intended");
            r.finish();
            cfg.peers.push_back(std::move(pc));
        }
    }
    if (!cfg.inbound && cfg.peers.empty())
        top.fail(root, "nothing to do: configure 'inbound', 'peers', or both");

    if (auto* ka = top.find("keepalive")) {
        MapReader r(*ka, "keepalive", path);
        read_duration(r, "idle", cfg.keepalive.idle, 1s, 32767s);  // the kernel's limits
        read_duration(r, "interval", cfg.keepalive.interval, 1s, 32767s);
        read_int(r, "count", cfg.keepalive.count, 1, 127);
        read_duration(r, "user_timeout", cfg.keepalive.user_timeout, 0ms, 1h);
        r.finish();
    }
    if (auto* t = top.find("timeouts")) {
        MapReader r(*t, "timeouts", path);
        read_duration(r, "connect", cfg.timeouts.connect, 100ms, 10min);
        read_duration(r, "handshake", cfg.timeouts.handshake, 100ms, 10min);
        read_duration(r, "shutdown", cfg.timeouts.shutdown, 0ms, 1h);
        r.finish();
    }
    if (auto* l = top.find("limits")) {
        MapReader r(*l, "limits", path);
        read_int(r, "max_connections", cfg.limits.max_connections, 1, 1'000'000);
        read_int(r, "max_handshakes_per_source", cfg.limits.max_handshakes_per_source, 1, 100'000);
        read_int(r, "max_handshakes", cfg.limits.max_handshakes, 1, 100'000);
        r.finish();
    }
    if (auto* w = top.find("workers")) {
        auto text = scalar(top, *w, "workers");
        if (text != "auto") {
            int n = 0;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
            if (ec != std::errc() || end != text.data() + text.size() || n < 1 || n > 64)
                top.fail(*w, "'workers' must be 'auto' or a whole number from 1 to 64");
            cfg.workers = static_cast<unsigned>(n);
        }
    }
    if (auto* fw = top.find("firewall")) {
        MapReader r(*fw, "firewall", path);
        FirewallConfig fc;
        if (auto* n = r.find("enabled")) fc.enabled = bool_value(r, *n, "firewall.enabled");
        if (auto* n = r.find("table")) {
            fc.table = scalar(r, *n, "table");
            bool ok = !fc.table.empty() && fc.table.size() <= 32;
            for (char c : fc.table)
                ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-');
            if (!ok) r.fail(*n, "'firewall.table' must be 1-32 letters, digits, '_' or '-'");
        }
        if (auto* n = r.find("on_exit")) {
            auto v = scalar(r, *n, "on_exit");
            if (v != "keep" && v != "remove")
                r.fail(*n, "'firewall.on_exit' must be keep or remove");
            fc.remove_on_exit = v == "remove";
        }
        read_duration(r, "resolve_interval", fc.resolve_interval, 1s);
        if (auto* list = r.find("protect")) {
            if (!list->IsSequence())
                r.fail(*list, "'firewall.protect' must be a list of {port, allow}");
            std::set<int> ports;
            for (const auto& item : *list) {
                MapReader pr(item, "firewall.protect[]", path);
                FirewallProtect fp;
                int port = 0;
                auto* pn = pr.find("port");
                if (!pn) pr.fail(item, "missing required key 'firewall.protect[].port'");
                read_int(pr, "port", port, 1, 65535);
                if (!ports.insert(port).second)
                    pr.fail(*pn, "port " + std::to_string(port) + " is listed twice");
                fp.port = static_cast<std::uint16_t>(port);
                auto* allow = pr.find("allow");
                if (!allow)
                    pr.fail(item,
                            "missing required key 'firewall.protect[].allow' ([] = loopback only)");
                if (!allow->IsSequence())
                    pr.fail(*allow, "'firewall.protect[].allow' must be a list");
                for (const auto& a : *allow) {
                    if (!a.IsScalar()) pr.fail(a, "allow entries must be strings");
                    if (a.Scalar() == "peers") {
                        fp.peers = true;
                        continue;
                    }
                    std::string why;
                    if (!parse_prefix(a.Scalar(), why))
                        pr.fail(a, "'firewall.protect[].allow': " + why);
                    fp.prefixes.push_back(a.Scalar());
                }
                pr.finish();
                fc.protect.push_back(std::move(fp));
            }
        }
        r.finish();
        cfg.firewall = std::move(fc);
    }
    if (auto* h = top.find("health")) {
        MapReader r(*h, "health", path);
        if (auto* n = r.find("enabled")) cfg.health.enabled = bool_value(r, *n, "health.enabled");
        auto* listen = r.find("listen");
        if (listen) cfg.health.listen = endpoint_list(r, *listen, "health.listen");
        if (auto* n = r.find("public"))
            cfg.health.public_listen = bool_value(r, *n, "health.public");
        for (const auto& ep : cfg.health.listen)
            if (!cfg.health.public_listen && !is_loopback(ep))
                r.fail(
                    *listen,
                    "'health.listen' " + ep.to_string() +
                        " is not a loopback address: the endpoint has no authentication and shows "
                        "the node's peers and addresses. Keep it on 127.0.0.1 (and protect it with "
                        "the firewall guard), or add 'health.public: true' if that is intended");
        if (auto* n = r.find("postgres")) {
            cfg.health.postgres = scalar(r, *n, "postgres");
            if (cfg.health.postgres.empty())
                r.fail(*n,
                       "'health.postgres' is empty: give a libpq conninfo or leave the key out");
            if (auto why = conninfo_error(cfg.health.postgres); !why.empty())
                r.fail(*n, "'health.postgres' is not a libpq connection string: " + why);
        }
        read_duration(r, "probe_interval", cfg.health.probe_interval, 100ms, 1h);
        read_duration(r, "check_timeout", cfg.health.check_timeout, 100ms, 10min);
        r.finish();
    }
    if (auto* lv = top.find("log_level")) {
        cfg.log_level = scalar(top, *lv, "log_level");
        static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error"};
        if (!levels.count(cfg.log_level))
            top.fail(*lv, "'log_level' must be one of trace, debug, info, warn, error");
    }
    top.finish();
    return cfg;
}

Config load_config(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw StartupError(path + ": cannot read config file: " + std::strerror(errno));
    std::stringstream buf;
    buf << in.rdbuf();
    return parse_config(buf.str(), path);
}

}  // namespace tunneld

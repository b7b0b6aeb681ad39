#include "tunneld/config/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "tunneld/config/prefix.hpp"
#include "tunneld/config/sections.hpp"
#include "tunneld/config/yaml_reader.hpp"
#include "tunneld/error.hpp"

namespace tunneld {

using namespace std::chrono_literals;
using namespace yaml_config;

namespace {

// tls: ca, cert, key (paths relative to the config file), crl, groups, rekey_bytes, rekey_interval.
void read_tls(MapReader& top, const YAML::Node& root, const std::string& path, Config& cfg) {
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
                               "' is not allowed (choose from X25519MLKEM768, SecP256r1MLKEM768, "
                               "SecP384r1MLKEM1024, X25519, X448, P-256, P-384, P-521)");
                cfg.tls.groups.push_back(g.Scalar());
            }
        }
        if (auto* n = r.find("rekey_bytes")) {
            auto text = scalar(r, *n, "rekey_bytes");
            auto v = parse_size(text);
            if (!v || *v < 64 * 1024)
                r.fail(*n, "'tls.rekey_bytes': '" + text +
                               "': expected bytes of at least 64kB, e.g. 64GB");
            cfg.tls.rekey_bytes = *v;
        }
        read_duration(r, "rekey_interval", cfg.tls.rekey_interval, 1s, 24h);
        r.finish();
    }
}

// A plaintext listener (peers[].local, peers[].services.X, routes[].local):
// loopback unless `public: true` on its peer or route (`kind`).
Endpoint local_listener(MapReader& r, const YAML::Node& local, const std::string& key,
                        const std::string& kind, bool public_local, const std::string& reaches,
                        std::set<std::string>& locals) {
    auto ep = endpoint_value(r, local, key.substr(key.rfind('.') + 1), false);
    if (!locals.insert(ep.to_string()).second)
        r.fail(local, "local address " + ep.to_string() + " is used twice");
    if (!public_local && !is_loopback(ep))
        r.fail(local, "'" + key + "' " + ep.to_string() +
                          " is not a loopback address: anyone who reaches it gets a connection "
                          "to " +
                          reaches +
                          " with this node's identity. Use 127.0.0.1, or add 'public: true' to "
                          "this " +
                          kind + " if that is really intended");
    return ep;
}

// peers[]: name, connect, local (optional; loopback unless public: true), public.
void read_peers(MapReader& top, const std::string& path, Config& cfg,
                std::set<std::string>& locals) {
    if (auto* peers = top.find("peers")) {
        if (!peers->IsSequence()) top.fail(*peers, "'peers' must be a list");
        std::set<std::string> names;
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
            if (auto* n = r.find("public")) pc.public_local = bool_value(r, *n, "peers[].public");
            if (auto* local = r.find("local"))  // optional: a peer may be reached by routes only
                pc.local = local_listener(r, *local, "peers[].local", "peer", pc.public_local,
                                          pc.name, locals);
            if (auto* services = r.find("services")) {
                MapReader sr(*services, "peers[].services", path);  // a mapping, no key twice
                for (auto it = services->begin(); it != services->end(); ++it) {
                    PeerService ps;
                    ps.name = it->first.Scalar();
                    if (!is_valid_service_name(ps.name) || ps.name == "postgresql")
                        sr.fail(it->first,
                                "'peers[].services': '" + ps.name +
                                    "' is not a service name (1-32 of a-z, 0-9 and '-'; postgres "
                                    "is peers[].local)");
                    ps.local =
                        local_listener(sr, it->second, "peers[].services." + ps.name, "peer",
                                       pc.public_local, pc.name + "'s service " + ps.name, locals);
                    pc.services.push_back(std::move(ps));
                }
                std::sort(
                    pc.services.begin(), pc.services.end(),
                    [](const PeerService& a, const PeerService& b) { return a.name < b.name; });
            }
            r.finish();
            cfg.peers.push_back(std::move(pc));
        }
    }
}

// routes[]: local, to (primary | replica | a peer's name), max_lag (replica), public.
void read_routes(MapReader& top, const std::string& path, Config& cfg,
                 std::set<std::string>& locals) {
    auto* routes = top.find("routes");
    if (!routes) return;
    if (!routes->IsSequence()) top.fail(*routes, "'routes' must be a list");
    if (cfg.peers.empty() && routes->size() > 0)
        top.fail(*routes, "'routes' needs 'peers': a route picks among the peers (and this node)");
    for (const auto& n : *routes) {
        MapReader r(n, "routes[]", path);
        RouteConfig rc;
        auto* to = r.find("to");
        if (!to)
            r.fail(n, "missing required key 'routes[].to' (primary, replica or a peer's name)");
        auto target = scalar(r, *to, "to");
        if (target == "primary") {
            rc.to = RouteConfig::To::primary;
        } else if (target == "replica") {
            rc.to = RouteConfig::To::replica;
        } else {
            rc.to = RouteConfig::To::peer;
            rc.peer = target;
            std::string names;
            bool known = false;
            for (const auto& p : cfg.peers) {
                known = known || p.name == target;
                names += (names.empty() ? "" : ", ") + p.name;
            }
            if (!known)
                r.fail(*to, "'routes[].to': '" + target +
                                "' is not primary, replica or a peer's name (peers: " + names +
                                ")");
        }
        if (auto* p = r.find("public")) rc.public_local = bool_value(r, *p, "routes[].public");
        auto* local = r.find("local");
        if (!local) r.fail(n, "missing required key 'routes[].local'");
        rc.local = local_listener(r, *local, "routes[].local", "route", rc.public_local,
                                  "the route's target (" + rc.target_text() + ")", locals);
        if (auto* l = r.find("leader")) {
            auto v = scalar(r, *l, "leader");
            if (rc.to != RouteConfig::To::primary)
                r.fail(*l, "'routes[].leader' applies to 'to: primary' only");
            if (v != "postgres" && v != "patroni")
                r.fail(*l, "'routes[].leader' must be postgres or patroni");
            rc.leader =
                v == "patroni" ? RouteConfig::Leader::patroni : RouteConfig::Leader::postgres;
        }
        if (auto* m = r.find("max_lag")) {
            if (rc.to != RouteConfig::To::replica)
                r.fail(*m, "'routes[].max_lag' applies to 'to: replica' only");
            auto text = scalar(r, *m, "max_lag");
            rc.max_lag = parse_size(text);
            if (!rc.max_lag)
                r.fail(*m, "'routes[].max_lag': '" + text + "': expected bytes, e.g. 16MB");
        }
        r.finish();
        cfg.routes.push_back(std::move(rc));
    }
}

// keepalive, timeouts, limits, workers: numbers with their bounds.
void read_tuning(MapReader& top, const YAML::Node& root, const std::string& path, Config& cfg) {
    for (auto [key, ka] : {std::pair{"keepalive", &cfg.keepalive},
                           std::pair{"service_keepalive", &cfg.service_keepalive}}) {
        auto* node = top.find(key);
        if (!node) continue;
        MapReader r(*node, key, path);
        read_duration(r, "idle", ka->idle, 1s, 32767s);  // the kernel's limits
        read_duration(r, "interval", ka->interval, 1s, 32767s);
        read_int(r, "count", ka->count, 1, 127);
        read_duration(r, "user_timeout", ka->user_timeout, 0ms, 1h);
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
        read_int(r, "max_local_connections", cfg.limits.max_local_connections, 1, 1'000'000);
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
}

}  // namespace

std::string RouteConfig::target_text() const {
    switch (to) {
        case To::primary:
            return "primary";
        case To::replica:
            return "replica";
        case To::peer:
            return peer;
    }
    return peer;
}

bool ClusterConfig::is_witness(const std::string& name) const {
    return std::find(witnesses.begin(), witnesses.end(), name) != witnesses.end();
}

std::vector<std::string> Config::voters() const {
    std::vector<std::string> out;
    for (const auto& p : peers)
        if (!cluster.is_witness(p.name)) out.push_back(p.name);
    if (node_is_database() && !cluster.is_witness(node)) out.push_back(node);
    for (const auto& w : cluster.witnesses) out.push_back(w);
    return out;
}

const ServiceConfig* InboundConfig::service(const std::string& name) const {
    for (const auto& s : services)
        if (s.name == name) return &s;
    return nullptr;
}

bool is_valid_service_name(const std::string& name) {
    if (name.empty() || name.size() > 32 || name.front() == '-') return false;
    for (char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
    return true;
}

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

    read_tls(top, root, path, cfg);
    std::set<std::string> locals;  // plaintext listeners (inbound, peers, routes): each used once
    read_inbound(top, path, cfg, locals);
    read_peers(top, path, cfg, locals);
    read_routes(top, path, cfg, locals);
    if (!cfg.inbound && cfg.peers.empty())
        top.fail(root, "nothing to do: configure 'inbound', 'peers', or both");

    read_tuning(top, root, path, cfg);
    read_firewall(top, root, path, cfg);
    read_health(top, root, path, cfg);
    read_cluster(top, path, cfg);
    check_public_listeners(top, cfg);
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

// The config loader's firewall: and health: sections (config.cpp reads the rest).
#include "tunneld/config/sections.hpp"

#include <cctype>
#include <set>

#include "tunneld/config/prefix.hpp"

namespace tunneld {

using namespace yaml_config;

// firewall: enabled, table, on_exit, resolve_interval, protect[] {port, allow}.
void read_firewall(MapReader& top, const YAML::Node& root, const std::string& path, Config& cfg) {
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
                    if (auto p = parse_prefix(a.Scalar()); !p)
                        pr.fail(a, "'firewall.protect[].allow': " + p.error().what);
                    fp.prefixes.push_back(a.Scalar());
                }
                pr.finish();
                fc.protect.push_back(std::move(fp));
            }
        }
        r.finish();
        cfg.firewall = std::move(fc);
    }
}

void check_public_listeners(MapReader& top, const Config& cfg) {
    if (!cfg.firewall || !cfg.firewall->enabled) return;
    std::set<int> listed;
    for (const auto& p : cfg.firewall->protect) listed.insert(p.port);
    auto need = [&](const std::string& what, const Endpoint& ep) {
        if (ep.is_unix() || is_loopback(ep) || listed.count(ep.port)) return;
        top.fail(*top.find("firewall"),
                 what + " " + ep.to_string() + " is public (no TLS): list port " +
                     std::to_string(ep.port) +
                     " in firewall.protect with the sources allowed to use it (the guard keeps "
                     "every other plaintext listener loopback-only)");
    };
    for (const auto& p : cfg.peers) {
        if (!p.public_local) continue;
        if (p.has_local()) need("peers[" + p.name + "].local", p.local);
        for (const auto& s : p.services) need("peers[" + p.name + "].services." + s.name, s.local);
    }
    for (const auto& r : cfg.routes)
        if (r.public_local) need("routes[].local", r.local);
    if (cfg.health.enabled && cfg.health.public_listen)
        for (const auto& ep : cfg.health.listen) need("health.listen", ep);
}

// health: enabled, listen (loopback unless public: true), public, postgres, intervals, tags.
void read_health(MapReader& top, const YAML::Node& root, const std::string& path, Config& cfg) {
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
            cfg.health.postgres_at = r.position(*n);  // health/conninfo.hpp checks the string
        }
        if (auto* n = r.find("patroni")) {
            cfg.health.patroni = endpoint_value(r, *n, "patroni", false);
            if (!is_loopback(cfg.health.patroni))
                r.fail(*n, "'health.patroni' " + cfg.health.patroni.to_string() +
                               " is not a loopback address: it is this node's own Patroni REST "
                               "API (restapi.listen), asked GET /leader; use 127.0.0.1:8008");
        }
        read_duration(r, "probe_interval", cfg.health.probe_interval, 100ms, 1h);
        read_duration(r, "check_timeout", cfg.health.check_timeout, 100ms, 10min);
        if (auto* tags = r.find("tags")) {
            MapReader tr(*tags, "health.tags", path);  // a mapping, no key twice
            for (auto it = tags->begin(); it != tags->end(); ++it) {
                if (!it->second.IsScalar())
                    tr.fail(it->second, "'health.tags." + it->first.Scalar() +
                                            "' must be a plain value (Patroni compares it as "
                                            "text: ?tag_" +
                                            it->first.Scalar() + "=value)");
                cfg.health.tags[it->first.Scalar()] = it->second.Scalar();
            }
        }
        r.finish();
    }
}

}  // namespace tunneld

// The inbound: section of the config (listen, backend, allow, local,
// services, source): its own file, as sections.cpp holds firewall: and health:.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>

#include "tunneld/config/prefix.hpp"
#include "tunneld/config/sections.hpp"

namespace tunneld {

using namespace yaml_config;

namespace {

// inbound.local and inbound.services.X.local: loopback only.
Endpoint own_local(MapReader& r, const YAML::Node& n, const std::string& key,
                   const std::string& reaches, std::set<std::string>& locals) {
    auto ep = endpoint_value(r, n, "local", false);
    if (!locals.insert(ep.to_string()).second)
        r.fail(n, "local address " + ep.to_string() + " is used twice");
    if (!is_loopback(ep))
        r.fail(n, "'" + key + "' " + ep.to_string() + " is not a loopback address: it reaches " +
                      reaches +
                      " without TLS; it exists so this host can use the same address as the "
                      "other hosts (127.0.0.1)");
    return ep;
}

// inbound.services: {name: backend} or {name: {backend, allow, local}}.
std::vector<ServiceConfig> read_services(const YAML::Node& n, const std::string& path,
                                         std::set<std::string>& locals) {
    MapReader r(n, "inbound.services", path);  // a mapping, no key twice
    std::vector<ServiceConfig> out;
    for (auto it = n.begin(); it != n.end(); ++it) {
        ServiceConfig sc;
        sc.name = it->first.Scalar();
        if (!is_valid_service_name(sc.name))
            r.fail(it->first, "'inbound.services': '" + sc.name +
                                  "' is not a service name (1-32 of a-z, 0-9 and '-')");
        if (sc.name == "postgresql")
            r.fail(it->first,
                   "'inbound.services.postgresql': postgres is 'inbound.backend' (ALPN "
                   "postgresql); name other services only");
        const YAML::Node v = it->second;  // a copy: it->second is a temporary proxy's member
        if (v.IsMap()) {
            MapReader sr(v, "inbound.services." + sc.name, path);
            auto* backend = sr.find("backend");
            if (!backend)
                sr.fail(v, "missing required key 'inbound.services." + sc.name + ".backend'");
            sc.backend = endpoint_value(sr, *backend, "backend", true);
            if (auto* local = sr.find("local"))
                sc.local = own_local(sr, *local, "inbound.services." + sc.name + ".local",
                                     "this node's " + sc.name, locals);
            if (auto* q = sr.find("local_quorum")) {
                auto text = q->IsScalar() ? q->Scalar() : "";
                if (text != "majority" && text != "none")
                    sr.fail(*q, "'inbound.services." + sc.name +
                                    ".local_quorum' must be majority or none");
                sc.local_quorum = text == "majority";
                if (sc.local_quorum && !sc.local.port)
                    sr.fail(*q, "'inbound.services." + sc.name +
                                    ".local_quorum' applies to its 'local' listener, which is "
                                    "not given");
            }
            if (auto* allow = sr.find("allow")) {
                sc.allow = identity_list(sr, *allow, "allow");
                if (sc.allow.empty())
                    sr.fail(*allow, "'inbound.services." + sc.name +
                                        ".allow' is empty: no peer could ever use it (leave the "
                                        "key out to use inbound.allow)");
                sc.own_allow = true;
            }
            sr.finish();
        } else {
            sc.backend = endpoint_value(r, v, sc.name, true);
        }
        out.push_back(std::move(sc));
    }
    std::sort(out.begin(), out.end(),
              [](const ServiceConfig& a, const ServiceConfig& b) { return a.name < b.name; });
    return out;
}

// inbound.source: {identity: loopback address}. Each identity must be allowed
// in, each address a loopback literal of the backend's family and not shared.
void read_sources(MapReader& r, const YAML::Node& n, const std::string& path, InboundConfig& ic) {
    MapReader sr(n, "inbound.source", path);
    auto backend = parse_prefix(ic.backend.host);
    if (ic.backend.is_unix() || !backend || !is_loopback(ic.backend))
        r.fail(n,
               "'inbound.source' needs inbound.backend on a loopback address given as a "
               "literal (127.0.0.1:5432 or [::1]:5432), not " +
                   ic.backend.to_string());
    std::vector<Prefix> used;
    for (auto it = n.begin(); it != n.end(); ++it) {
        auto identity = it->first.Scalar();
        if (std::find(ic.allow.begin(), ic.allow.end(), identity) == ic.allow.end())
            sr.fail(it->first, "'inbound.source': '" + identity + "' is not in inbound.allow");
        if (!it->second.IsScalar())
            sr.fail(it->second, "'inbound.source." + identity + "' must be an address");
        auto text = it->second.Scalar();
        auto a = parse_prefix(text);
        if (!a || text.find('/') != std::string::npos || !is_loopback(Endpoint{text, 0, {}}) ||
            a->v6 != backend->v6)
            sr.fail(it->second, "'inbound.source." + identity + "': '" + text +
                                    "' is not a loopback address like the backend's (" +
                                    ic.backend.host +
                                    "); use 127.0.1.N (all of 127.0.0.0/8 is local on Linux)");
        if (std::find(used.begin(), used.end(), *a) != used.end())
            sr.fail(it->second, "'inbound.source." + identity + "': " + text +
                                    " is given to another identity too: they could not be told "
                                    "apart");
        used.push_back(*a);
        ic.source[identity] = text;
    }
}

}  // namespace

// inbound: listen, backend, allow (never empty), services, source.
void read_inbound(MapReader& top, const std::string& path, Config& cfg,
                  std::set<std::string>& locals) {
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
        if (auto* local = r.find("local"))
            ic.local = own_local(r, *local, "inbound.local", "this node's postgres", locals);
        if (auto* services = r.find("services"))
            ic.services = read_services(*services, path, locals);
        if (auto* source = r.find("source")) read_sources(r, *source, path, ic);
        for (auto& sc : ic.services)
            if (!sc.own_allow) sc.allow = ic.allow;
        r.finish();
        cfg.inbound = std::move(ic);
    }
}

}  // namespace tunneld

// Sections of the config loader, each reading one top-level key into `cfg`.
// Internal to config/.
#pragma once
#include <yaml-cpp/yaml.h>

#include <set>
#include <string>

#include "tunneld/config/config.hpp"
#include "tunneld/config/yaml_reader.hpp"

namespace tunneld {

// inbound: listen, backend, allow, local, services, source (inbound_section.cpp).
// `locals` collects every plaintext listen address, to refuse one used twice.
void read_inbound(yaml_config::MapReader& top, const std::string& path, Config& cfg,
                  std::set<std::string>& locals);
// firewall: enabled, table, on_exit, resolve_interval, protect[] {port, allow}.
void read_firewall(yaml_config::MapReader& top, const YAML::Node& root, const std::string& path,
                   Config& cfg);
// health: enabled, listen (loopback unless public: true), public, postgres, intervals, tags.
void read_health(yaml_config::MapReader& top, const YAML::Node& root, const std::string& path,
                 Config& cfg);
// cluster: quorum (majority | none), witnesses. After peers, routes, inbound and
// health: a route to: primary over two voters and no witness is refused unless
// quorum: none says so.
void read_cluster(yaml_config::MapReader& top, const std::string& path, Config& cfg);

// With the firewall on, a plaintext listener that is public (peers[].public,
// routes[].public, health.public) must have its port in firewall.protect: the
// guard keeps every other plaintext listener loopback-only, and a public one
// needs an explicit list of who may use it. Fails at the firewall: key.
void check_public_listeners(yaml_config::MapReader& top, const Config& cfg);

}  // namespace tunneld

// Sections of the config loader, each reading one top-level key into `cfg`.
// Internal to config/.
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>

#include "tunneld/config/config.hpp"
#include "tunneld/config/yaml_reader.hpp"

namespace tunneld {

// firewall: enabled, table, on_exit, resolve_interval, protect[] {port, allow}.
void read_firewall(yaml_config::MapReader& top, const YAML::Node& root, const std::string& path,
                   Config& cfg);
// health: enabled, listen (loopback unless public: true), public, postgres, intervals.
void read_health(yaml_config::MapReader& top, const YAML::Node& root, const std::string& path,
                 Config& cfg);

}  // namespace tunneld

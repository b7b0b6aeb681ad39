// The config loader's YAML reading: a mapping reader that reports unknown and
// repeated keys with their position, and typed value readers that fail with
// "file:line:col: 'key' ..." messages. Internal to config/.
#pragma once
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <deque>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tunneld/config/duration.hpp"
#include "tunneld/config/endpoint.hpp"
#include "tunneld/error.hpp"

namespace tunneld::yaml_config {

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

    // "FILE:LINE:COL" of `at` ("FILE" when the node has no position).
    std::string position(const YAML::Node& at) const {
        auto mark = at.Mark();
        std::ostringstream out;
        out << file_;
        if (!mark.is_null()) out << ":" << mark.line + 1 << ":" << mark.column + 1;
        return out.str();
    }

    [[noreturn]] void fail(const YAML::Node& at, const std::string& message) const {
        throw StartupError(position(at) + ": " + message);
    }

  private:
    YAML::Node node_;
    std::string where_;
    const std::string& file_;
    std::set<std::string> known_;
    std::deque<YAML::Node> stash_;  // a deque: pointers from find() stay valid as more are stashed
};

std::string scalar(MapReader& r, const YAML::Node& n, const std::string& key);

std::string require_string(MapReader& r, const YAML::Node& map, const std::string& key);

Duration duration_value(MapReader& r, const YAML::Node& n, const std::string& key);

// Every duration has a ceiling: a value like 99999999h would overflow timers
// (and a keepalive or timeout that long is a typo, not a setting).
void read_duration(MapReader& r, const std::string& key, Duration& out, Duration min,
                   Duration max = std::chrono::hours(24));

// The groups a client may ask for: elliptic curves and their ML-KEM hybrids, so nobody
// unauthenticated can make us compute a finite-field (ffdhe8192) key exchange.
const std::set<std::string>& allowed_groups();

void read_int(MapReader& r, const std::string& key, int& out, int min, int max);

Endpoint endpoint_value(MapReader& r, const YAML::Node& n, const std::string& key, bool allow_unix);

// One address or a list of them (not empty, no unix sockets).
std::vector<Endpoint> endpoint_list(MapReader& r, const YAML::Node& n, const std::string& key);

bool bool_value(MapReader& r, const YAML::Node& n, const std::string& key);

std::vector<std::string> identity_list(MapReader& r, const YAML::Node& n, const std::string& key);

std::string resolve_path(const std::string& config_path, const std::string& p);

}  // namespace tunneld::yaml_config

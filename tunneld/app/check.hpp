// `tunneld check --peer FILE`: a pre-flight report an operator can act on.
#pragma once
#include <ostream>
#include <string>

#include "tunneld/config/check_line.hpp"
#include "tunneld/config/config.hpp"

namespace tunneld {

// Validates the config, TLS files, key permissions, cert/key match, chain and
// node identity, expiry, and that the backend and every peer accept a TCP
// connection (within timeouts.connect). Prints one "ok"/"FAIL"/"warn" line per
// item to `out`. Returns 0 when nothing failed, 1 otherwise.
// `extra` adds checks from parts built on the core (the firewall guard).
// `as_user`: judge key ownership for that user ("" = the packaged unit's
// User=tunneld when it exists and this runs as root, else this process's user).
int run_check(const std::string& config_path, std::ostream& out, const ExtraCheck& extra = {},
              const std::string& as_user = "");

}  // namespace tunneld

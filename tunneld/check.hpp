// `tunneld check --peer FILE`: a pre-flight report an operator can act on.
#pragma once
#include <ostream>
#include <string>

namespace tunneld {

// Validates the config, TLS files, key permissions, cert/key match, chain and
// node identity, expiry, and that the backend and every peer accept a TCP
// connection (within timeouts.connect). Prints one "ok"/"FAIL"/"warn" line per
// item to `out`. Returns 0 when nothing failed, 1 otherwise.
int run_check(const std::string& config_path, std::ostream& out);

}  // namespace tunneld

// `tunneld firewall show|apply|remove --peer FILE`.
#pragma once
#include <ostream>
#include <string>
#include <vector>

#include "tunneld/config/check_line.hpp"

namespace tunneld::firewall {

// show: what the config asks for, whether the table is in place, drop counters.
int show(const std::string& peer, std::ostream& out);
// apply: resolve peers and replace the table now (as the daemon does at start).
int apply(const std::string& peer, std::ostream& out);
// For `tunneld check`: what the guard would protect, unresolved peers, and
// whether this process may change nftables (a real netlink query, no change).
std::vector<CheckLine> check_lines(const Config& cfg);
// remove: delete the table.
int remove(const std::string& peer, std::ostream& out);

}  // namespace tunneld::firewall

// One line of `tunneld check`'s report, and the hook through which parts built
// beside the core (the firewall guard) add their own lines. Plain data, no
// dependencies beyond the config, so firewall/ can report without linking app/.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tunneld/config/config.hpp"

namespace tunneld {

struct CheckLine {
    enum Kind { ok, warn, fail } kind;
    std::string text;
};
using ExtraCheck = std::function<std::vector<CheckLine>(const Config&)>;

}  // namespace tunneld

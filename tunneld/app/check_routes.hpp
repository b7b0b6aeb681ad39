// `tunneld check`'s lines about routes[] and the cluster's voters (check.cpp
// prints them): plain data out, no I/O.
#pragma once
#include <vector>

#include "tunneld/config/check_line.hpp"
#include "tunneld/config/config.hpp"

namespace tunneld {

// What each route picks from, whether this node can itself be a target, and,
// with a route to: primary, the quorum it needs (or a warning for quorum: none).
std::vector<CheckLine> check_routes(const Config& cfg);

}  // namespace tunneld

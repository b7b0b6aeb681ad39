// libpq connection strings (health.postgres) and libpq's messages, without a
// connection. The config loader (config/, which does not link libpq) records
// where health.postgres was written; the daemon and `tunneld check` refuse a
// bad string with check_conninfo() before anything starts.
#pragma once
#include <string>

#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"

namespace tunneld {

// Whether `conninfo` is a libpq connection string; fails with libpq's complaint.
Result<void> parse_conninfo(const std::string& conninfo);

// Throws StartupError "FILE:LINE:COL: 'health.postgres' is not a libpq
// connection string: ..." when cfg.health.postgres is set and not valid.
void check_conninfo(const Config& cfg);

// libpq's multi-line messages as one line: "...failed: No such file or
// directory; Is the server running locally...". nullptr gives "".
std::string libpq_one_line(const char* text);

}  // namespace tunneld

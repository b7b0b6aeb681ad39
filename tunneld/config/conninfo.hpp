// libpq connection strings (health.postgres) and libpq's messages, without a
// connection: used by the config loader to refuse a bad string at start.
#pragma once
#include <string>

namespace tunneld {

// Checks that `conninfo` is a valid libpq connection string; returns libpq's
// complaint, or "" when it is fine.
std::string conninfo_error(const std::string& conninfo);

// libpq's multi-line messages as one line: "...failed: No such file or
// directory; Is the server running locally...". nullptr gives "".
std::string libpq_one_line(const char* text);

}  // namespace tunneld

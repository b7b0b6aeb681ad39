#include "tunneld/health/conninfo.hpp"

#include "tunneld/health/libpq_ptr.hpp"

#include <sstream>

namespace tunneld {

std::string libpq_one_line(const char* text) {
    std::string out, line;
    std::istringstream in(text ? text : "");
    while (std::getline(in, line)) {
        auto b = line.find_first_not_of(" \t"), e = line.find_last_not_of(" \t");
        if (b == std::string::npos) continue;
        out += (out.empty() ? "" : "; ") + line.substr(b, e - b + 1);
    }
    return out;
}

Result<void> parse_conninfo(const std::string& conninfo) {
    char* raw_err = nullptr;
    PgConninfoPtr opts(PQconninfoParse(conninfo.c_str(), &raw_err));
    PgStringPtr err(raw_err);
    if (err) return Problem{libpq_one_line(err.get())};
    if (!opts) return Problem{"cannot parse"};
    return {};
}

void check_conninfo(const Config& cfg) {
    if (cfg.health.postgres.empty()) return;
    if (auto parsed = parse_conninfo(cfg.health.postgres); !parsed)
        throw StartupError(
            cfg.health.postgres_at +
            ": 'health.postgres' is not a libpq connection string: " + parsed.error().what);
}

}  // namespace tunneld

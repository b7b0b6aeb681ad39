#include "tunneld/config/conninfo.hpp"

#include <libpq-fe.h>

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

std::string conninfo_error(const std::string& conninfo) {
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
    std::string why = err ? libpq_one_line(err) : (opts ? "" : "cannot parse");
    if (err) PQfreemem(err);
    if (opts) PQconninfoFree(opts);
    return why;
}

}  // namespace tunneld

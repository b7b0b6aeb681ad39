// Unit-test helper: the StartupError message that parsing `text` as
// /etc/tunneld/t.yaml gives, or "(no error)".
#pragma once
#include <string>

#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"

namespace tunneld::test {

inline std::string config_error_of(const std::string& text) {
    try {
        parse_config(text, "/etc/tunneld/t.yaml");
    } catch (const StartupError& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace tunneld::test

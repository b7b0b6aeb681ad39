// The YAML config loader (and libpq's reading of health.postgres): any bytes give a Config or one
// StartupError, never a crash, a hang or another exception type.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/health/conninfo.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    try {
        auto cfg = tunneld::parse_config(text, "/etc/tunneld/fuzz.yaml");
        tunneld::check_conninfo(cfg);  // what the daemon does next: libpq parses health.postgres
    } catch (const tunneld::StartupError&) {
    }
    return 0;
}

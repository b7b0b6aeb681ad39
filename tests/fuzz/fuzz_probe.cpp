// The probe's line splitter and ping/pong parsers: what a peer (or anything
// that got a certificate) sends on the probe stream.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tunneld/health/probe_messages.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string pending(reinterpret_cast<const char*>(data), size);
    std::string line;
    std::int64_t seq = 1;
    while (tunneld::take_line(pending, line)) {
        if (auto ping = tunneld::parse_ping(line)) {
            auto pong = tunneld::make_pong(*ping, "fuzz", tunneld::BackendState{});
            if (!tunneld::parse_pong(pong.substr(0, pong.size() - 1), *ping))
                __builtin_trap();  // round trip
        }
        if (auto state = tunneld::parse_pong(line, seq)) (void)state;
        ++seq;
    }
    return 0;
}

// The probe's line splitter and ping/pong parsers: what a peer (or anything
// that got a certificate) sends on the probe stream.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tunneld/base/printable.hpp"
#include "tunneld/health/probe_messages.hpp"

namespace {

// Whatever a peer sends, the text that reaches state (and from there the
// journal, STATUS= and /status) holds no control character.
void require_printable(const tunneld::BackendState& s) {
    auto ok = [](const std::string& t) { return tunneld::is_printable(t); };
    if (!ok(s.error)) __builtin_trap();
    if (s.postgres)
        for (const auto* t :
             {&s.postgres->error, &s.postgres->current_lsn, &s.postgres->receive_lsn,
              &s.postgres->replay_lsn, &s.postgres->receiver_status})
            if (!ok(*t)) __builtin_trap();
    for (const auto& svc : s.services)
        if (!ok(svc.error) || !ok(svc.name)) __builtin_trap();
}

}  // namespace

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
        if (auto pong = tunneld::parse_pong(line, seq)) {
            require_printable(pong->backend);
            if (const auto& w = pong->you)
                for (const auto* t :
                     {&w->usename, &w->application_name, &w->client_addr, &w->state, &w->sync_state,
                      &w->sent_lsn, &w->write_lsn, &w->flush_lsn, &w->replay_lsn, &w->peer})
                    if (!tunneld::is_printable(*t)) __builtin_trap();
        }
        ++seq;
    }
    return 0;
}

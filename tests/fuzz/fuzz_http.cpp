// The health endpoint's request path: bytes in, response bytes out, with the
// server's own limits and routes answering from a fixed snapshot.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tunneld/health/server.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const auto snapshot = [](bool) {
        tunneld::Snapshot s;
        s.node = "fuzz-1";
        s.version = "0";
        s.listeners_up = s.workers_alive = true;
        tunneld::PeerView p;
        p.name = "peer-1";
        s.peers.push_back(p);
        return s;
    };
    auto out =
        tunneld::http_answer(std::string_view(reinterpret_cast<const char*>(data), size), snapshot);
    if (!out.empty() && out.rfind("HTTP/1.", 0) != 0)
        __builtin_trap();  // always a response, or nothing yet
    return 0;
}

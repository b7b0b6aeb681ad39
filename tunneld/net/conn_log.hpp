// The log lines of a relayed connection: one at open, one at close.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "tunneld/base/handshake_failure.hpp"
#include "tunneld/base/outcome.hpp"

namespace tunneld {

struct ConnInfo {
    std::uint64_t id = 0;
    const char* direction = "";  // "inbound" or "outbound"
    std::string peer;            // identity of the other tunneld (verified, or expected)
    std::string remote;          // address the connection came from / went to
    std::string local;           // the plaintext side (backend, or local client)
    std::string listener;        // the local plaintext listener it came in on, "" for inbound
    std::string route;           // routes[]: the route's local address, "" otherwise
    std::string service;         // inbound.services name; "" = postgresql (not logged)
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

// "conn=7 inbound open peer=standby-1 remote=10.0.0.2:40112 local=127.0.0.1:5432 resumed=no
// group=X25519MLKEM768" (with " service=patroni" after local= for a service connection;
// group= is the TLS key exchange, left out for a plain connection: group "")
void log_open(const ConnInfo& c, bool resumed, const std::string& group = "");

// "conn=7 inbound close peer=... remote=... local=... rx=123 tx=456 duration=1.234s
// reason=finished" rx = bytes received from the TLS side, tx = bytes sent to it. Logged at info for
// clean closes, warn otherwise.
void log_close(const ConnInfo& c, const RelayResult& r);

// "conn=7 inbound handshake failed remote=... reason=unknown_ca detail=..."
void log_handshake_failure(const ConnInfo& c, const HandshakeResult& h);

// A routes[] connection refused before anything was dialled:
// "conn=9 outbound close peer=- remote=- local=127.0.0.1:40112 route=127.0.0.1:6432
// reason=no_primary detail=\"split brain: primary-1 and standby-1 both report primary\""
// `count`: refusals this line stands for (RefusalLog), said when more than one.
void log_route_refusal(const ConnInfo& c, CloseReason reason, const std::string& detail,
                       std::uint64_t count = 1);

// Rate limit for refusal lines, so a flood from one address cannot flood the
// log: note() says whether to log now and how many refusals the line stands for
// (0 = stay silent). The first refusal from a source is logged at once, then at
// most one line per `interval` with the count since the last line. Thread-safe;
// remembers at most 4096 sources (beyond that they share one entry).
class RefusalLog {
  public:
    explicit RefusalLog(std::chrono::steady_clock::duration interval) : interval_(interval) {}
    std::uint64_t note(const std::string& source, std::chrono::steady_clock::time_point now =
                                                      std::chrono::steady_clock::now());

  private:
    std::uint64_t note_locked(const std::string& source, std::chrono::steady_clock::time_point now);
    struct Entry {
        std::chrono::steady_clock::time_point logged_at;
        std::uint64_t pending = 0;
    };
    std::mutex mutex_;
    std::chrono::steady_clock::duration interval_;
    std::map<std::string, Entry> sources_;
};

}  // namespace tunneld

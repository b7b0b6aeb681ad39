// Counters of a running node, written by connections, handshakes and reloads
// (from any I/O thread, lock-free on the data path) and read by the health
// endpoint's /status and /metrics. Owned by Context (context.hpp); outlives every connection.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tunneld/base/handshake_failure.hpp"
#include "tunneld/base/outcome.hpp"
#include "tunneld/error.hpp"

namespace tunneld {

enum class Direction { inbound = 0, outbound = 1 };
const char* to_string(Direction d);

// Traffic with one peer in one direction: live connections and bytes, kept up
// to date while connections run (a replication stream lives for days).
struct Traffic {
    std::atomic<std::int64_t> active{0};   // relayed connections open now
    std::atomic<std::uint64_t> opened{0};  // relayed connections ever opened
    ByteCounters bytes;                    // from_tls = received from the peer, to_tls = sent
    std::atomic<std::int64_t> last_handshake{
        0};  // unix seconds of the last successful handshake, 0 = never

    // The last failure seen with this peer ("" = none) and when (unix seconds).
    void set_error(std::string e);
    std::pair<std::string, std::int64_t> last_error() const;

  private:
    mutable std::mutex mutex_;
    std::string last_error_;
    std::int64_t last_error_at_ = 0;
};

constexpr std::size_t kHandshakeFailureCount =
    static_cast<std::size_t>(HandshakeFailure::io_error) + 1;
constexpr std::size_t kCloseReasonCount = static_cast<std::size_t>(CloseReason::no_quorum) + 1;

class Stats {
  public:
    // The counters for (direction, peer, service), created on first use; the
    // service is "postgresql" or an inbound.services name. The pointer stays
    // valid for the life of Stats.
    Traffic& traffic(Direction d, const std::string& peer,
                     const std::string& service = "postgresql");
    struct TrafficKey {
        Direction direction;
        std::string peer;
        std::string service;
        auto operator<=>(const TrafficKey&) const = default;
    };
    // Every (direction, peer, service) seen so far.
    std::vector<std::pair<TrafficKey, Traffic*>> all_traffic() const;

    // One finished TLS handshake of a data connection: ok, or failed by reason.
    void count_handshake(Direction d, HandshakeFailure f);
    std::uint64_t handshakes(Direction d, HandshakeFailure f) const;

    // The key-exchange group of one successful handshake ("X25519MLKEM768",
    // "X25519", ...: tls/groups.hpp negotiated_group).
    void count_key_exchange(Direction d, const std::string& group);
    std::map<std::pair<Direction, std::string>, std::uint64_t> key_exchanges() const;

    // One relayed connection that ended, by reason.
    void count_close(Direction d, CloseReason r);
    std::uint64_t closes(Direction d, CloseReason r) const;

    // A reload of the TLS material: error "" = success.
    void count_reload(const Result<void>& done);
    struct Reloads {
        std::uint64_t ok = 0, failed = 0;
        std::int64_t last_at = 0;  // unix seconds, 0 = never
        std::string last_error;    // of the last attempt ("" when it succeeded)
    };
    Reloads reloads() const;

  private:
    mutable std::mutex mutex_;
    std::map<TrafficKey, std::unique_ptr<Traffic>> traffic_;
    std::array<std::array<std::atomic<std::uint64_t>, kHandshakeFailureCount>, 2> handshakes_{};
    std::array<std::array<std::atomic<std::uint64_t>, kCloseReasonCount>, 2> closes_{};
    std::map<std::pair<Direction, std::string>, std::uint64_t> key_exchanges_;
    Reloads reloads_;
};

// Seconds since the epoch, now.
std::int64_t unix_now();

// Counts a relayed connection as active for its lifetime (constructed when the
// relay starts, destroyed when it ends).
struct ActiveGuard {
    Traffic& t;
    explicit ActiveGuard(Traffic& traffic) : t(traffic) {
        t.active++;
        t.opened++;
    }
    ~ActiveGuard() { t.active--; }
};

}  // namespace tunneld

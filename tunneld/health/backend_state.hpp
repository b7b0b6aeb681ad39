// What a node knows about its own database: whether the inbound backend
// accepts connections and, when health.postgres is set, postgres' role and
// replication position. Produced by BackendMonitor, served by the health
// endpoint, and carried to peers in probe pongs.
#pragma once
#include <boost/json/fwd.hpp>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tunneld {

// One row of pg_stat_replication on this node (a walsender), with the peer
// tunneld identity whose tunnel carries it when that is known: the walsender's
// client address and port are the local end of an inbound connection's backend
// socket (net/connection_table.hpp: peer_of_backend_source).
struct WalSender {
    std::int64_t pid = 0;
    std::string usename, application_name;
    std::string client_addr;  // "" for a unix-socket client
    std::int64_t client_port = -1;
    std::string state;       // "streaming", "catchup", "backup", ...
    std::string sync_state;  // "async", "potential", "sync", "quorum"
    std::int64_t sync_priority = 0;
    std::string sent_lsn, write_lsn, flush_lsn, replay_lsn;  // "" when unknown
    double write_lag = -1, flush_lag = -1, replay_lag = -1;  // seconds; -1 = unknown (NULL)
    std::string peer;  // the tunneld identity of the standby; "" = not through a tunnel we know

    bool synchronous() const { return sync_state == "sync" || sync_state == "quorum"; }
};

struct PostgresState {
    bool up = false;              // connected and answered the status query
    std::string error;            // why not, when !up
    bool answered = false;        // the server took the connection (then maybe refused us:
                                  // unknown role, pg_hba); error then starts "health.postgres: "
    bool in_recovery = false;     // a standby
    std::string current_lsn;      // primary: pg_current_wal_lsn()
    std::string receive_lsn;      // standby: pg_last_wal_receive_lsn()
    std::string replay_lsn;       // standby: pg_last_wal_replay_lsn()
    std::string receiver_status;  // standby: pg_stat_wal_receiver.status ("streaming"), "" if none
    bool replay_paused = false;   // standby: pg_is_wal_replay_paused()
    double replay_delay_seconds =
        0;  // standby: age of the last replayed transaction while behind, else 0
    // For Patroni-shaped bodies (health/patroni.hpp):
    std::int64_t server_version = 0;  // server_version_num, 150004
    std::int64_t timeline = 0;        // primary: current; standby: received (0 = unknown)
    std::string system_identifier;    // pg_control_system().system_identifier
    std::string postmaster_start_time;
    std::string replay_timestamp;       // standby: pg_last_xact_replay_timestamp(), "" = NULL
    std::vector<WalSender> walsenders;  // pg_stat_replication (not sent in pongs)
};

// One inbound.services backend, checked like inbound.backend (a connect).
struct ServiceBackendState {
    std::string name;
    bool reachable = false;
    std::string error;  // why not
};

// This node's Patroni, asked GET /leader (health.patroni): 200 while it holds
// the leader lock, 503 while it does not.
struct PatroniLeader {
    bool answered = false;  // an HTTP answer of 200 or 503 came back
    bool leader = false;    // 200
    std::string error;      // why not answered
};

struct BackendState {
    bool checked = false;         // a first check has finished
    std::int64_t checked_at = 0;  // unix seconds
    // steady_ms() when postgres was last asked, in the clock of the process that
    // holds this state (0: unknown). On the wire it travels as its age ("age_ms"),
    // so a route can compare a replica's position with the primary's at the same
    // moment without the hosts' clocks agreeing.
    std::int64_t sampled_ms = 0;
    bool reachable = false;  // accepts connections (inbound.backend, or postgres when no inbound)
    std::string error;       // why not, when !reachable
    std::optional<PostgresState> postgres;      // when health.postgres is set
    std::vector<ServiceBackendState> services;  // inbound.services, by name
    std::optional<PatroniLeader> patroni;       // when health.patroni is set
};

// Without the walsenders: a pong tells each peer only its own (probe_messages.hpp).
boost::json::value to_json(const BackendState& s);
boost::json::value to_json(const WalSender& w);
// Reads what to_json wrote (from a peer: like backend_state_from_json).
WalSender walsender_from_json(const boost::json::value& v);
// Reads what to_json wrote (from a peer: missing or mistyped fields read as
// their defaults; never throws). An age outside 0..1 h reads as unknown.
BackendState backend_state_from_json(const boost::json::value& v);

// Milliseconds on this process' monotonic clock.
std::int64_t steady_ms();

// "16/B374D848" -> 0x16B374D848; nullopt for anything else.
std::optional<std::uint64_t> parse_lsn(std::string_view text);

// A primary's WAL position at a moment (steady_ms, this process' clock).
struct LsnSample {
    std::int64_t at_ms = 0;
    std::uint64_t lsn = 0;
};

// A primary's recent positions, oldest first, so that a replica's replay position
// is compared with the primary's at the moment the replica was sampled, not with
// a newer sample: the two arrive on their own rounds, and a burst of writes
// between them is not lag.
inline constexpr std::size_t kPositionsKept = 16;
// Appends `s` unless it is not newer than the last one; keeps the last kPositionsKept.
void keep_position(std::vector<LsnSample>& positions, LsnSample s);
// The last position at or before `at_ms`; nullopt when `at_ms` is 0 (unknown) or
// older than every position held.
std::optional<std::uint64_t> position_at(const std::vector<LsnSample>& positions,
                                         std::int64_t at_ms);

// A peer's backend from a pong answered `rtt_ms` ago, as the probe keeps it: its
// sample moved back by half the round trip (the peer sampled, then answered),
// and its position kept in `positions` while it reports primary (emptied when it
// reports anything else).
void note_peer_backend(BackendState& backend, std::vector<LsnSample>& positions, double rtt_ms);

// The latest value of T, set by one thread and read by others.
template <class T>
class Latest {
  public:
    // Called after every set(), on the setter's thread and outside the lock.
    // Install it before anything can set().
    void on_set(std::function<void()> f) { on_set_ = std::move(f); }
    void set(T v) {
        {
            std::lock_guard lock(mutex_);
            value_ = std::move(v);
        }
        if (on_set_) on_set_();
    }
    T get() const {
        std::lock_guard lock(mutex_);
        return value_;
    }

  private:
    mutable std::mutex mutex_;
    T value_{};
    std::function<void()> on_set_;
};

}  // namespace tunneld

// Admission and bookkeeping of live connections: enforces
// limits.max_connections (authenticated inbound peers), limits.max_local_connections
// (each local plaintext listener on its own), the probes allowed per peer
// identity, and lets the daemon close every live connection from its own
// thread when the drain time on SIGTERM runs out.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tunneld/base/outcome.hpp"
#include "tunneld/net/openssl_ptr.hpp"

namespace tunneld {

// One admitted connection. `close` is set by the connection's coroutine and only
// ever called on `executor` while `alive`; the coroutine clears both before its
// sockets go away.
struct LiveConnection {
    boost::asio::any_io_executor executor;
    std::function<void()> close;
    // Set while bytes are relayed: stops reading the plaintext side (as if it
    // had sent EOF), so the relay passes the half-close on, flushes what is in
    // flight both ways, and ends when the other end closes too.
    std::function<void()> quiesce;
    bool alive = true;
    std::uint64_t id = 0;
    X509Ptr peer_cert;           // set after the handshake; checked when a new CRL arrives
    bool revoked = false;        // closed because peer_cert was revoked
    bool expired = false;        // closed because peer_cert passed its notAfter
    bool probe = false;          // a peer probe connection (closed at once on SIGTERM, not drained)
    bool counted = false;        // holds one of limits.max_connections
    std::string listener;        // holds one of this local listener's max_local_connections
    std::string probe_identity;  // a probe: holds one of this identity's kMaxProbesPerIdentity
    // routes[]: which route carried it and to which node (set by admit, then
    // constant). `switched` is set, on `executor`, when the route closed it
    // because the primary changed.
    std::string route, target;
    // Accepted on an inbound.services.X.local_quorum listener: closed when this
    // node loses its majority (close_needing_quorum).
    bool needs_quorum = false;
    std::string switched;                                 // why, "" if not
    CloseReason switched_reason = CloseReason::switched;  // or no_quorum
    // Inbound: the local end of its TCP backend socket ("127.0.0.1:40112"),
    // which postgres sees as the client (pg_stat_replication.client_addr and
    // client_port); set by note_backend_source.
    std::string backend_source;
};

// Clears c.close when a scope that the hook references ends.
struct CloseHook {
    LiveConnection& c;
    ~CloseHook() {
        c.close = nullptr;
        c.quiesce = nullptr;
    }
};

class ConnectionTable;

// "127.0.0.1:40112", "[::1]:40112": how a backend source is keyed (from an
// address as Asio or postgres' host() prints it, and a port).
inline std::string backend_source_key(const std::string& address, long long port) {
    return (address.find(':') != std::string::npos ? "[" + address + "]" : address) + ":" +
           std::to_string(port);
}

// A connection's place in the table: released when this handle is destroyed
// (on the connection's executor). Empty when the table was full.
class Admission {
  public:
    Admission(ConnectionTable& table, std::shared_ptr<LiveConnection> c)
        : table_(table), c_(std::move(c)) {}
    Admission(Admission&& o) noexcept : table_(o.table_), c_(std::move(o.c_)) {}
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;
    ~Admission();
    explicit operator bool() const { return c_ != nullptr; }
    LiveConnection* operator->() const { return c_.get(); }
    LiveConnection& operator*() const { return *c_; }

  private:
    ConnectionTable& table_;
    std::shared_ptr<LiveConnection> c_;
};

class ConnectionTable {
  public:
    // Probe connections one peer identity may hold at once: a prober keeps
    // one, `certs rotate` opens one more for a moment.
    static constexpr int kMaxProbesPerIdentity = 2;

    explicit ConnectionTable(std::size_t max_connections, std::size_t max_local = 128)
        : max_(max_connections), max_local_(max_local) {}

    // Admits a connection, or returns an empty Admission when max_connections
    // are already live. With counted=false it takes no max_connections place
    // (yet: see count()), but is closable like any other.
    // `route`/`target`: for a routes[] connection (fixed for its life).
    Admission admit(boost::asio::any_io_executor executor, std::uint64_t id, bool counted = true,
                    std::string route = {}, std::string target = {});
    // Admits a connection accepted on the local plaintext listener `listener`
    // (its address): it takes a place among that listener's max_local places,
    // never one of max_connections, so local clients cannot use up the room of
    // inbound replication. Empty when the listener's places are all taken.
    Admission admit_local(boost::asio::any_io_executor executor, std::uint64_t id,
                          const std::string& listener, std::string route = {},
                          std::string target = {}, bool needs_quorum = false);
    // Gives an admitted, not yet counted connection its max_connections place;
    // false when they are all taken.
    bool count(LiveConnection& c);
    // Forgets `c` (called by ~Admission). Must run on c's executor.
    void release(const std::shared_ptr<LiveConnection>& c);
    // Live connections, peer probes not included.
    std::size_t size() const;
    // `f` is called (on the releasing connection's thread, outside the lock)
    // each time size() drops to 0: the drain waits for that instead of polling.
    void on_empty(std::function<void()> f);
    // Marks `c` as a peer probe of `identity`: it stays closable but stops
    // counting toward max_connections (the limit is on relayed connections).
    // False (nothing marked) when `identity` already holds
    // kMaxProbesPerIdentity probes: the caller closes it.
    bool mark_probe(LiveConnection& c, const std::string& identity);
    // Posts close() to every live connection's executor; with probes_only,
    // only to peer probe connections.
    void close_all(bool probes_only = false);
    // Posts quiesce() to every relayed connection: the graceful start of a stop.
    void quiesce_all();
    // Posts to every live connection a check of its peer certificate with
    // `revoked` (on the connection's executor; it must own what it reads, e.g.
    // the new CRL's store); revoked ones are marked and closed.
    void close_revoked(std::function<bool(X509*)> revoked);
    // Posts to every live connection (probes too) a check of its peer
    // certificate's notAfter against the clock; expired ones are marked and
    // closed. The daemon calls it every second: an identity that expired
    // while connected loses its live connections, not only new ones.
    void close_expired();
    // Posts to every live connection of `route` to `target`: marks it
    // switched (`why`) and closes it. Returns how many were asked to close.
    std::size_t close_routed(const std::string& route, const std::string& target,
                             const std::string& why, CloseReason reason = CloseReason::switched);
    // Posts to every live connection of a local_quorum listener: marks it
    // no_quorum (`why`) and closes it. Returns how many were asked to close.
    std::size_t close_needing_quorum(const std::string& why);

    // Records that `c`, from peer `identity`, reached its backend from the
    // local address `source` ("127.0.0.1:40112"); forgotten when c is released.
    void note_backend_source(LiveConnection& c, const std::string& source,
                             const std::string& identity);
    // The peer identity whose live inbound connection reaches the backend from
    // `source`; "" when none does (a local client, a unix socket, gone).
    std::string peer_of_backend_source(const std::string& source) const;

    // The budget of unauthenticated connections (accepted, TLS handshake not
    // finished), taken at accept before anything else and apart from
    // max_connections, so strangers can never use up the room of authenticated
    // peers. Returns why a new one is refused, or none (then end_handshake must
    // follow, on every path).
    enum class Refusal { none, per_source, total };
    Refusal begin_handshake(const std::string& source, int per_source, int total);
    void end_handshake(const std::string& source);

  private:
    // Every live connection now (taken under the lock; the posting that
    // follows runs outside it).
    std::vector<std::shared_ptr<LiveConnection>> live_now() const;
    // Marks those `which` picks (under the lock: route, target and
    // needs_quorum are set at admission) with `why` and posts their close.
    std::size_t close_marked(const std::function<bool(const LiveConnection&)>& which,
                             const std::string& why, CloseReason reason);

    mutable std::mutex mutex_;
    std::size_t max_;
    std::map<std::uint64_t, std::shared_ptr<LiveConnection>> live_;
    std::map<std::string, int> handshakes_;
    int handshakes_total_ = 0;
    std::size_t max_local_;
    std::size_t probes_ = 0;
    std::size_t counted_ = 0;
    std::map<std::string, std::size_t> local_;  // live connections per local listener
    std::map<std::string, int> probes_by_identity_;
    std::function<void()> on_empty_;
    std::map<std::string, std::string> backend_sources_;  // source -> peer identity
};

}  // namespace tunneld

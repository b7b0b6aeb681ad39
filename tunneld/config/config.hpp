// The node's configuration (--peer FILE): a plain value parsed from YAML.
// Every key is known; an unknown key, a wrong type or an out-of-range value is a
// StartupError naming "file:line:col" and the key, so a typo never silently
// becomes a default. Relative file paths are resolved against the config's folder.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tunneld/config/duration.hpp"
#include "tunneld/config/endpoint.hpp"

namespace tunneld {

using namespace std::chrono_literals;

struct TlsFiles {
    std::string ca;    // PEM bundle of trusted CAs (several allowed, for CA rollover)
    std::string cert;  // this node's certificate (chain may follow in the same file)
    std::string key;   // this node's private key; refused if group/world readable
    std::string crl;   // optional PEM CRL(s); empty = no revocation check
    // Key-exchange groups offered and accepted (tls.groups), in order of
    // preference: elliptic curves and their ML-KEM hybrids only. Names the
    // running OpenSSL lacks are skipped (tls/groups.hpp): the hybrid is first
    // where OpenSSL is 3.5 or later, and ignored before.
    std::vector<std::string> groups{"X25519MLKEM768", "X25519", "P-256", "P-384"};
    // TLS 1.3 KeyUpdate (both directions' keys) after this many bytes sent on
    // one connection (tls.rekey_bytes) or this long since the last (tls.rekey_interval),
    // well before AES-GCM's 2^24.5 records (~390 GB). OpenSSL never rekeys by itself.
    std::uint64_t rekey_bytes = std::uint64_t{64} << 30;
    Duration rekey_interval = 24h;
};

// inbound.services: another local backend on the inbound port, chosen by the
// ALPN id the peer sends (tls/alpn.hpp: "tunneld-svc/<name>").
struct ServiceConfig {
    std::string name;                // "patroni", "etcd-peer": [a-z0-9][a-z0-9-]*, at most 32
    Endpoint backend;                // TCP or unix socket
    std::vector<std::string> allow;  // who may use it: its own allow, else inbound.allow
    bool own_allow = false;          // `allow` was given for this service
    Endpoint local;  // optional loopback listener straight to `backend` (see InboundConfig::local)
    // local_quorum: majority: `local` admits a connection only while this node
    // reaches a majority of the cluster's voters (and has for a moment: a
    // member of a replicated store cut off with this node needs that to catch
    // up); else it resets it, as for a silent peer's service. For this node's
    // own member of etcd when Patroni lists every member: on the minority side
    // it would read that member's stale view of the leader key.
    bool local_quorum = false;
};

struct InboundConfig {
    std::vector<Endpoint> listen;         // one or more TLS listen addresses
    Endpoint backend;                     // local postgres: TCP or unix socket (ALPN "postgresql")
    std::vector<std::string> allow;       // peer identities (SAN DNS or URI) allowed in
    std::vector<ServiceConfig> services;  // sorted by name
    // inbound.local (optional, loopback): a plaintext listener on this host
    // straight to `backend`, no TLS. With it, the address other hosts use for
    // this node (a peers[].local there) works on this host too, so a cluster
    // tool's connect_address is one address everywhere.
    Endpoint local;
    // inbound.source (optional): peer identity -> a loopback address the
    // backend connection for that peer's tunnel comes from (127.0.1.N), so
    // pg_hba.conf and pg_stat_replication.client_addr can tell peers apart.
    // Only with a TCP backend on a loopback literal address.
    std::map<std::string, std::string> source;

    const ServiceConfig* service(const std::string& name) const;
};

// peers[].services: a local plaintext listener reaching one of the peer's services.
struct PeerService {
    std::string name;  // the service's name on the peer (its inbound.services key)
    Endpoint local;
};

struct PeerConfig {
    std::string name;           // expected identity in the peer's certificate; also sent as SNI
    Endpoint connect;           // the peer's inbound listener (host may be a DNS name)
    Endpoint local;             // local plaintext listener for postgres clients (optional)
    bool public_local = false;  // peers[].public: `local` may be a non-loopback address
    std::vector<PeerService> services;  // sorted by name

    bool has_local() const { return local.port != 0; }
};

// routes[]: a local plaintext listener whose target follows the cluster.
struct RouteConfig {
    enum class To {
        primary,  // the one node whose postgres is not in recovery
        replica,  // a streaming standby within max_lag, the least loaded
        peer,     // always `peer` (cascading: a fixed upstream)
    };
    Endpoint local;
    To to = To::primary;
    std::string peer;                      // to: <peer name>
    std::optional<std::uint64_t> max_lag;  // to: replica: bytes behind the primary (16MB)
    // to: primary: whose word makes a node the primary. postgres: not in
    // recovery. patroni: that, and its Patroni holds the leader lock (GET /leader
    // on its health.patroni), so the tunnel never disagrees with the DCS.
    enum class Leader { postgres, patroni };
    Leader leader = Leader::postgres;
    bool public_local = false;  // routes[].public, as for peers

    // How logs, /status and /metrics name it: "127.0.0.1:6432".
    std::string name() const { return local.to_string(); }
    // "primary", "replica" or the peer's name.
    std::string target_text() const;
};

struct KeepaliveConfig {
    Duration idle = 30s;          // TCP_KEEPIDLE
    Duration interval = 10s;      // TCP_KEEPINTVL
    int count = 3;                // TCP_KEEPCNT
    Duration user_timeout = 60s;  // TCP_USER_TIMEOUT; 0 = kernel default
};

struct TimeoutConfig {
    Duration connect = 10s;    // TCP connect to a peer or the backend
    Duration handshake = 10s;  // complete TLS handshake, from accept or connect
    Duration shutdown = 30s;   // drain time on SIGTERM before live connections are closed
};

struct LimitConfig {
    int max_connections = 256;        // live relayed connections from authenticated inbound peers
    int max_local_connections = 128;  // live connections per local plaintext listener
    int max_handshakes_per_source = 16;  // TLS handshakes in progress from one source address
    int max_handshakes = 64;  // TLS handshakes in progress in total (unauthenticated connections)
};

struct FirewallProtect {
    std::uint16_t port = 0;
    bool peers = false;                 // "peers" in allow: the resolved peer addresses
    std::vector<std::string> prefixes;  // CIDRs / addresses, validated
};

struct FirewallConfig {
    bool enabled = true;  // present = on, unless enabled: false
    std::string table = "tunneld";
    std::vector<FirewallProtect> protect;  // inbound.listen's port is added (allow: peers)
    bool remove_on_exit = false;           // on_exit: keep (default, fail closed) | remove
    Duration resolve_interval = 60s;       // how often peer names are resolved again
};

struct HealthConfig {
    bool enabled = true;  // the HTTP endpoint (on unless enabled: false)
    // No TCP listener unless health.listen is given: two instances on one host
    // (tunneld@a, tunneld@b) must never collide on a default port.
    std::vector<Endpoint> listen;
    bool public_listen = false;    // health.public: listen may be a non-loopback address
    std::string postgres;          // libpq conninfo for role and lag; empty = no postgres checks
    std::string postgres_at;       // "FILE:LINE:COL" of health.postgres, for check_conninfo()
    Duration probe_interval = 2s;  // peer probe ping period; a peer is down after 2 missed pongs
    Duration check_timeout = 3s;   // each backend / postgres check (connect + query)
    // Patroni's tags, for its ?tag_KEY=VALUE filters on /replica and the like
    // (noloadbalance: true takes the node out of /replica, as in Patroni).
    std::map<std::string, std::string> tags;
    // health.patroni: this node's Patroni REST API (TCP, loopback), asked GET
    // /leader at every check; whether Patroni holds the leader lock travels in
    // the probe's pongs for routes with `leader: patroni`. Port 0 = not asked.
    Endpoint patroni;
};

// cluster: who votes before a `to: primary` route picks a primary (partition
// safety). The voters are the database nodes (every peer that is not a witness,
// and this node when it has inbound.backend and health.postgres) and the
// witnesses. A route picks a primary only while this node reaches a strict
// majority of them; route/quorum.hpp holds the rule.
struct ClusterConfig {
    enum class Quorum {
        majority,  // the default
        none,      // cluster.quorum: none: follow whichever node reports primary (no vote)
    };
    Quorum quorum = Quorum::majority;
    bool quorum_given = false;  // cluster.quorum was written (`check` warns about none)
    // cluster.witnesses: identities of tunnelds without postgres that vote (an
    // application host, a small third host); may include this node itself. A
    // witness is reachable while its probe pings arrive here, or (a peer) while
    // this node's probe of it is up.
    std::vector<std::string> witnesses;

    bool is_witness(const std::string& name) const;
};

struct Config {
    std::string path;  // the file this came from (for messages)
    std::string node;  // this node's identity; must be a SAN DNS name of tls.cert
    TlsFiles tls;
    std::optional<InboundConfig> inbound;
    std::vector<PeerConfig> peers;
    std::vector<RouteConfig> routes;
    KeepaliveConfig keepalive;  // postgres connections and the probe
    // Service connections (inbound.services, peers[].services: etcd, Patroni's
    // API) carry programs with timeouts of their own; the tunnel keeps them
    // through a silent path about as long as Linux keeps a direct connection
    // (tcp_retries2: ~15 min), so a partition ends them no sooner than it would
    // without tunneld. Probes still go every `idle` (NAT state).
    KeepaliveConfig service_keepalive{30s, 10s, 90, 15min};
    TimeoutConfig timeouts;
    LimitConfig limits;
    unsigned workers = 0;  // I/O threads; 0 = "auto" (one per CPU, at most 8)
    std::string log_level = "info";
    std::optional<FirewallConfig> firewall;
    HealthConfig health;
    ClusterConfig cluster;

    // This node votes as a database node (a route candidate of its own).
    bool node_is_database() const { return inbound && !health.postgres.empty(); }
    // The voters, database nodes first (peers in config order, then this node),
    // then the witnesses, each once.
    std::vector<std::string> voters() const;
};

// Reads and parses the file at `path`. Throws StartupError (with file:line:col).
Config load_config(const std::string& path);

// Parses YAML `text`; `path` is used for messages and to resolve relative paths.
// Throws StartupError.
Config parse_config(const std::string& text, const std::string& path);

// True when `name` is usable as a service name: 1-32 of a-z, 0-9 and '-', not
// starting with '-'. "postgresql" is refused by the loader (it is inbound.backend).
bool is_valid_service_name(const std::string& name);

// True when `name` is usable as a node/peer identity: DNS-name characters
// (letters, digits, '-', '.'), or a URI with a scheme ("spiffe://..."); never a wildcard.
bool is_valid_identity(const std::string& name);

}  // namespace tunneld

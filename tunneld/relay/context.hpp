// What every connection of a running node shares: the settings a connection
// reads, the live-connection table, the current TLS material and the counters.
// Built and owned by app/ (Daemon), outliving every connection; narrower than
// the config on purpose: a connection sees its timeouts, limits and keepalive,
// never the listeners, peers or health sections.
#pragma once
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tunneld/config/config.hpp"
#include "tunneld/net/conn_log.hpp"
#include "tunneld/net/connection_table.hpp"
#include "tunneld/relay/silent_peers.hpp"
#include "tunneld/relay/stats.hpp"
#include "tunneld/tls/context.hpp"

namespace tunneld {

class TlsStream;

struct Context {
    // A peer's probe connection (ALPN tunneld-probe), once authenticated: the
    // health side answers it (health/probe.hpp serve_probe). Set by app/; a
    // node without it closes probes at once.
    using ProbeServer = std::function<boost::asio::awaitable<void>(TlsStream&, const ConnInfo&)>;

    const std::string node;  // this node's identity
    const TimeoutConfig timeouts;
    const LimitConfig limits;
    const KeepaliveConfig keepalive;          // postgres connections, probes
    const KeepaliveConfig service_keepalive;  // service connections (config.hpp)

    ConnectionTable connections;
    std::atomic<std::shared_ptr<const TlsMaterial>> tls;
    std::atomic<std::uint64_t> next_id{1};
    Stats stats;
    RefusalLog refusals{std::chrono::seconds(10)};  // limit refusals: one line per source per 10 s
    SilentPeers silent;  // peers the probe gets no answer from: not dialled
    HeardPeers heard;    // identities whose probe pings arrive here
    ProbeServer serve_probe;
    // Why this node must not serve a local_quorum listener now ("reaching 1 of
    // 3 voters ..."), or nothing. Set by app/ (route/quorum.hpp); unset: never.
    std::function<std::optional<std::string>()> minority;

    Context(const Config& c, std::shared_ptr<const TlsMaterial> material)
        : node(c.node),
          timeouts(c.timeouts),
          limits(c.limits),
          keepalive(c.keepalive),
          service_keepalive(c.service_keepalive),
          connections(static_cast<std::size_t>(c.limits.max_connections),
                      static_cast<std::size_t>(c.limits.max_local_connections)),
          tls(std::move(material)) {}
};

}  // namespace tunneld

// What every listener and connection of a running node shares: the config,
// the I/O threads, the current TLS material and the live-connection table.
// Owned by Daemon; outlives every connection. It lives in health/ because the
// counters and the backend's state it carries are health's; net/ and tls/ below
// never see it, relay/ and app/ above use it.
#pragma once
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "tunneld/config/config.hpp"
#include "tunneld/health/backend_state.hpp"
#include "tunneld/health/silent_peers.hpp"
#include "tunneld/health/stats.hpp"
#include "tunneld/net/conn_log.hpp"
#include "tunneld/net/connection_table.hpp"
#include "tunneld/net/io_pool.hpp"
#include "tunneld/tls/context.hpp"

namespace tunneld {

struct Runtime {
    const Config& config;
    IoPool& pool;
    ConnectionTable connections;
    std::atomic<std::shared_ptr<const TlsMaterial>> tls;
    std::atomic<std::uint64_t> next_id{1};
    Stats stats;
    RefusalLog refusals{std::chrono::seconds(10)};  // limit refusals: one line per source per 10 s
    Latest<BackendState> backend;  // this node's database, as BackendMonitor saw it last
    SilentPeers silent;            // peers the probe gets no answer from: not dialled

    Runtime(const Config& c, IoPool& p, std::shared_ptr<const TlsMaterial> material)
        : config(c),
          pool(p),
          connections(static_cast<std::size_t>(c.limits.max_connections),
                      static_cast<std::size_t>(c.limits.max_local_connections)),
          tls(std::move(material)) {}
};

}  // namespace tunneld

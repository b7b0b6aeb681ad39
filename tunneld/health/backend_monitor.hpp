// Checks the node's own database every health.probe_interval: with
// health.postgres, over one kept-open libpq connection (role, replication
// position; no log line in postgres per check); without it, by a TCP/unix
// connect to inbound.backend that is closed at once. Runs on one executor, never blocks it; each
// check is bounded by health.check_timeout. Changes are logged once.
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>

#include "tunneld/config/config.hpp"
#include "tunneld/health/backend_state.hpp"

namespace tunneld {

class PostgresCheck;

class BackendMonitor {
  public:
    // The peer identity whose tunnel reaches the backend from a source
    // ("127.0.0.1:40112"), "" if none: ConnectionTable::peer_of_backend_source.
    using PeerOfSource = std::function<std::string(const std::string&)>;

    // Publishes every result to `out`. Nothing runs until start(). Each
    // walsender's peer is looked up with `peer_of` (by its client address and
    // port), else by inbound.source.
    BackendMonitor(const Config& cfg, boost::asio::io_context& io, Latest<BackendState>& out,
                   PeerOfSource peer_of = {});
    ~BackendMonitor();

    // Whether there is anything to check (an inbound backend or health.postgres).
    static bool wanted(const Config& cfg) {
        return cfg.inbound || !cfg.health.postgres.empty() || cfg.health.patroni.port != 0;
    }
    // Each inbound.services backend is checked too, by a connect; results in
    // BackendState::services (and so in probe pongs, /status and /metrics).

    void start();
    void stop();

  private:
    boost::asio::awaitable<void> loop();
    boost::asio::awaitable<BackendState> check_once();
    boost::asio::awaitable<ServiceBackendState> check_service(const ServiceConfig& sc);
    void log_changes(const BackendState& before, const BackendState& now) const;

    const Config& cfg_;
    boost::asio::io_context& io_;
    Latest<BackendState>& out_;
    boost::asio::steady_timer timer_;
    std::unique_ptr<PostgresCheck> pg_;
    PeerOfSource peer_of_;
    bool stopped_ = false;
};

}  // namespace tunneld

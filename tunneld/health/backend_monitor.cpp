#include "tunneld/health/backend_monitor.hpp"
#include "tunneld/net/spawn.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "tunneld/health/patroni_leader.hpp"
#include "tunneld/health/pg_check.hpp"
#include "tunneld/net/connection_table.hpp"
#include "tunneld/net/dial.hpp"
#include "tunneld/relay/stats.hpp"

namespace tunneld {

namespace asio = boost::asio;

BackendMonitor::BackendMonitor(const Config& cfg, asio::io_context& io, Latest<BackendState>& out,
                               PeerOfSource peer_of)
    : cfg_(cfg), io_(io), out_(out), timer_(io), peer_of_(std::move(peer_of)) {
    if (!cfg.health.postgres.empty())
        pg_ = std::make_unique<PostgresCheck>(io.get_executor(), cfg.health.postgres);
}

BackendMonitor::~BackendMonitor() = default;

void BackendMonitor::start() { spawn(io_, loop(), "the backend check"); }

void BackendMonitor::stop() {
    stopped_ = true;
    timer_.cancel();
}

asio::awaitable<ServiceBackendState> BackendMonitor::check_service(const ServiceConfig& sc) {
    const auto& be = sc.backend;
    Result<void> dialed;
    if (be.is_unix()) {
        asio::local::stream_protocol::socket sock(io_);
        dialed = co_await dial(sock, be.unix_path, cfg_.health.check_timeout);
    } else {
        asio::ip::tcp::socket sock(io_);
        dialed = co_await dial(sock, be, cfg_.health.check_timeout);
    }
    co_return ServiceBackendState{sc.name, bool(dialed),
                                  dialed ? "" : be.to_string() + ": " + dialed.error().what};
}

asio::awaitable<BackendState> BackendMonitor::check_once() {
    BackendState s;
    auto timeout = cfg_.health.check_timeout;
    if (cfg_.inbound && !pg_) {
        const auto& be = cfg_.inbound->backend;
        Result<void> dialed;
        if (be.is_unix()) {
            asio::local::stream_protocol::socket sock(io_);
            dialed = co_await dial(sock, be.unix_path, timeout);
        } else {
            asio::ip::tcp::socket sock(io_);
            dialed = co_await dial(sock, be, timeout);
        }
        s.reachable = bool(dialed);
        if (!dialed) s.error = be.to_string() + ": " + dialed.error().what;
    }
    if (pg_) {
        s.postgres = co_await pg_->run(timeout);
        s.sampled_ms = steady_ms();
        // A postgres that answers but refuses the check (no such role) is up:
        // the problem is the check's, and it is reported as such.
        s.reachable = s.postgres->up || s.postgres->answered;
        if (!s.reachable) s.error = s.postgres->error;
        for (auto& w : s.postgres->walsenders) {
            if (w.client_addr.empty() || w.client_port < 0) continue;  // a unix-socket client
            if (peer_of_) w.peer = peer_of_(backend_source_key(w.client_addr, w.client_port));
            if (w.peer.empty() && cfg_.inbound)
                for (const auto& [identity, address] : cfg_.inbound->source)
                    if (address == w.client_addr) w.peer = identity;
        }
    }
    if (cfg_.inbound)
        for (const auto& sc : cfg_.inbound->services)
            s.services.push_back(co_await check_service(sc));
    if (cfg_.health.patroni.port != 0)
        s.patroni = co_await ask_patroni_leader(io_.get_executor(), cfg_.health.patroni, timeout);
    s.checked = true;
    s.checked_at = unix_now();
    co_return s;
}

void BackendMonitor::log_changes(const BackendState& before, const BackendState& now) const {
    if (now.reachable != before.reachable || !before.checked) {
        if (now.reachable)
            spdlog::info("health: backend accepts connections");
        else
            spdlog::warn("health: backend does not accept connections: {}", now.error);
    }
    for (std::size_t i = 0; i < now.services.size(); ++i) {
        const auto& sv = now.services[i];
        bool was = before.checked && i < before.services.size() && before.services[i].reachable;
        if (before.checked && i < before.services.size() && was == sv.reachable) continue;
        if (sv.reachable)
            spdlog::info("health: service {} backend accepts connections", sv.name);
        else
            spdlog::warn("health: service {} backend does not accept connections: {}", sv.name,
                         sv.error);
    }
    if (now.patroni) {
        const auto& pl = *now.patroni;
        const auto* was = before.patroni ? &*before.patroni : nullptr;
        if (!was || was->answered != pl.answered || was->leader != pl.leader ||
            (!pl.answered && was->error != pl.error)) {
            if (!pl.answered)
                spdlog::warn("health: {}", pl.error);
            else
                spdlog::info("health: Patroni {} the leader lock",
                             pl.leader ? "holds" : "does not hold");
        }
    }
    if (!now.postgres) return;
    const auto& p = *now.postgres;
    if (p.answered && !p.up && (!before.postgres || before.postgres->error != p.error))
        spdlog::warn("{}", p.error);
    bool was_up = before.postgres && before.postgres->up;
    if (p.up && (!was_up || before.postgres->in_recovery != p.in_recovery))
        spdlog::info("health: postgres is {} ({})", p.in_recovery ? "a standby" : "the primary",
                     p.in_recovery ? "replay " + p.replay_lsn : "current " + p.current_lsn);
}

asio::awaitable<void> BackendMonitor::loop() {
    BackendState last;
    while (!stopped_) {
        auto now = co_await check_once();
        if (stopped_) co_return;
        log_changes(last, now);
        out_.set(now);
        last = std::move(now);
        timer_.expires_after(cfg_.health.probe_interval);
        auto [ec] = co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
    }
}

}  // namespace tunneld

#include "tunneld/app/daemon.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <optional>

#include "firewall/keeper.hpp"
#include "tunneld/app/drain.hpp"
#include "tunneld/app/notifier.hpp"
#include "tunneld/app/snapshot_builder.hpp"
#include "tunneld/error.hpp"
#include "tunneld/health/backend_monitor.hpp"
#include "tunneld/health/probe.hpp"
#include "tunneld/health/routes.hpp"
#include "tunneld/health/server.hpp"
#include "tunneld/net/spawn.hpp"
#include "tunneld/net/ticker.hpp"
#include "tunneld/relay/context.hpp"
#include "tunneld/relay/inbound.hpp"
#include "tunneld/relay/outbound.hpp"
#include "tunneld/route/quorum.hpp"
#include "tunneld/route/routes.hpp"
#include "tunneld/tls/reloader.hpp"

namespace tunneld {

namespace asio = boost::asio;

// The parts, in the order they are built (and, reversed, torn down). The
// firewall keeper comes first: it applies the guard before anything that can
// fail on bad input (TLS files, peers), so a node that refuses to start stays
// guarded. Work that may block (DNS, netlink, reading TLS files) runs on
// `side`, never on `io`, which accepts connections and answers signals.
struct Daemon::Impl {
    Config config;
    asio::io_context io{1};
    IoPool pool;
    IoPool side_pool{1, "side"};
    asio::io_context& side = side_pool.at(0);
    firewall::Keeper keeper{config, side};
    Context ctx;
    Latest<BackendState> backend;  // this node's database, as BackendMonitor saw it last
    TlsReloader tls;
    std::optional<InboundListener> inbound;
    std::optional<OutboundListener> outbound;
    std::optional<RouteTable> routes;
    std::vector<std::unique_ptr<PeerProbe>> probes;
    std::optional<BackendMonitor> backend_monitor;
    std::optional<HealthServer> health;
    // inbound.services.X.local_quorum (Context::minority): settled for two
    // probe intervals, at least 1 s.
    SettledMajority majority{
        std::max<Duration>(2 * config.health.probe_interval, std::chrono::seconds(1))};
    Notifier notifier;
    asio::signal_set signals{io, SIGHUP, SIGTERM, SIGINT};
    std::int64_t started_at = unix_now();
    std::atomic<bool> listeners_up{false};

    explicit Impl(Config c)
        : config(std::move(c)),
          pool(IoPool::threads_for(config.workers)),
          ctx(config, initial_tls()),
          tls(
              config, ctx.tls, side,
              [this](const auto& fresh) {
                  if (!config.tls.crl.empty())
                      ctx.connections.close_revoked([fresh](X509* cert) {
                          return is_revoked(cert, SSL_CTX_get_cert_store(fresh->server.get()));
                      });
              },
              [this](const Result<void>& done) { ctx.stats.count_reload(done); }),
          notifier(io, pool, [this] { return one_line_summary(snapshot(false)); }) {
        ctx.serve_probe = [this](TlsStream& s, const ConnInfo& info) {
            // A ping is proof the link from that peer works: a witness votes
            // while they arrive, and a peer found silent is dialled again.
            return serve_probe(config.node, backend, config.health.probe_interval, s, info,
                               [this, peer = info.peer] {
                                   ctx.heard.note(peer);
                                   ctx.silent.clear(peer);
                               });
        };
        if (config.inbound &&
            std::any_of(config.inbound->services.begin(), config.inbound->services.end(),
                        [](const auto& s) { return s.local_quorum; }))
            ctx.minority = [this] {
                return majority.refusal(quorum_now(), SettledMajority::Clock::now());
            };
        if (config.inbound) inbound.emplace(ctx, config, io, pool);
        outbound.emplace(ctx, config, io, pool);  // peers[] listeners, and inbound.local ones
        if (!config.routes.empty())
            routes.emplace(ctx, config, io, pool, [this] {
                return RouteTable::Facts{route_candidates(config, backend, probes),
                                         cluster_voters(config, ctx, probes)};
            });
        for (const auto& peer : config.peers) {
            probes.push_back(
                std::make_unique<PeerProbe>(ctx, peer, config.health.probe_interval, pool.next()));
            probes.back()->on_change([this] { changed(); });
        }
        backend.on_set([this] { changed(); });
        if (BackendMonitor::wanted(config))
            backend_monitor.emplace(config, io, backend, [this](const std::string& source) {
                return ctx.connections.peer_of_backend_source(source);
            });
        if (config.health.enabled && !config.health.listen.empty())
            health.emplace(config.health.listen, [this](bool full) { return snapshot(full); });
    }

    // The TLS material for the first handshakes. When it cannot be loaded the
    // node refuses to start, and says that the guard it applied stays.
    std::shared_ptr<const TlsMaterial> initial_tls() {
        try {
            return load_tls_material(config.tls, config.node, 1);
        } catch (const StartupError& e) {
            if (!keeper.enabled()) throw;
            throw StartupError(std::string(e.what()) + " (the firewall guard, table inet " +
                               config.firewall->table +
                               ", stays in place: postgres and the tunnel port remain closed to "
                               "outsiders)");
        }
    }

    // A probe or the backend monitor has a new result (called on their threads).
    void changed() {
        check_minority();
        notifier.poke();
        if (routes) routes->reevaluate();
    }

    // local_quorum listeners: when this node loses its majority, what they
    // have open goes too (reason=no_quorum), not only new connections: an etcd
    // client's kept-alive connection to its cut-off member would go on reading
    // what the majority has replaced. Called on every probe change and every
    // second (a witness falls silent without a probe change).
    std::mutex minority_mutex;
    bool refusing_locals = true;  // until a first majority has settled
    void check_minority() {
        if (!ctx.minority) return;
        std::lock_guard hold(minority_mutex);
        auto why = ctx.minority();  // a majority lost or back: from now
        if (why.has_value() == refusing_locals) return;
        refusing_locals = why.has_value();
        if (!why) {
            spdlog::info(
                "local_quorum: a majority has held for {} ms: serving the local_quorum "
                "listeners again",
                std::chrono::duration_cast<std::chrono::milliseconds>(majority.settle()).count());
            return;
        }
        auto closed = ctx.connections.close_needing_quorum(
            "this node's local_quorum service is not served without a majority: " + *why);
        spdlog::warn(
            "local_quorum: refusing the local_quorum listeners (no_quorum): {}; closed {} "
            "connection(s)",
            *why, closed);
    }

    QuorumView quorum_now() {
        return quorum_of(cluster_voters(config, ctx, probes), /*required=*/true);
    }

    Snapshot snapshot(bool full) {
        auto route_views = [this] { return routes ? routes->views() : std::vector<RouteView>{}; };
        return build_snapshot({config, ctx, backend, probes, keeper, route_views, started_at},
                              {notifier.loops_alive(), notifier.is_stopping(), listeners_up}, full);
    }

    // READY=1 once the listeners and the firewall are up (they are, by now), the
    // backend has been checked once and every peer probe has its first answer or
    // failure (each pokes the notifier), or after timeouts.connect + handshake (<= 10 s).
    asio::awaitable<void> announce_ready() {
        auto ready = [this] {
            return std::all_of(probes.begin(), probes.end(),
                               [](auto& p) { return p->state().probed; }) &&
                   (!backend_monitor || backend.get().checked);
        };
        auto max_wait = std::min<Duration>(config.timeouts.connect + config.timeouts.handshake,
                                           std::chrono::seconds(10));
        co_await notifier.announce_ready(ready, max_wait, [this](const std::string& line) {
            spdlog::info("tunneld {} ready: {}; {}", TUNNELD_VERSION,
                         node_summary(config, *ctx.tls.load()), line);
        });
    }

    asio::awaitable<void> drain() {
        co_await drain_connections(io, ctx.connections, config.timeouts.shutdown);
        if (health) health->stop();
        pool.stop_when_idle();
        side_pool.stop_when_idle();
        side_pool.join();  // its work was cancelled above; nothing else touches the guard now
        keeper.on_exit();
        spdlog::info("stopped");
    }

    // SIGHUP: RELOADING=1, re-read the TLS files and re-resolve the peers on
    // `side`, READY=1, and only then count the reload (`tunneld reload` waits
    // for the count). SIGTERM/SIGINT: stop everything and drain.
    // Every second: live connections whose peer certificate has expired are
    // closed (reason=expired), as a new CRL closes revoked ones; a witness
    // fallen silent is noticed for local_quorum.
    Ticker expiry_timer{side};
    asio::awaitable<void> close_expired_loop() {
        for (;;) {
            bool go_on = co_await expiry_timer.sleep(std::chrono::seconds(1));
            if (!go_on) co_return;
            ctx.connections.close_expired();
            check_minority();
        }
    }

    asio::awaitable<void> handle_signals() {
        for (;;) {
            auto [ec, signo] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            if (signo == SIGHUP) {
                notifier.reloading();
                asio::post(side, [this] {
                    auto done = tls.reload("SIGHUP");
                    keeper.refresh("SIGHUP");
                    notifier.reloaded();
                    ctx.stats.count_reload(done);
                });
                continue;
            }
            notifier.stopping();
            for (auto& p : probes) p->stop();
            if (backend_monitor) backend_monitor->stop();
            ctx.connections.close_all(true);  // peers' probes: nothing to drain
            asio::post(side, [this] {
                tls.stop();
                keeper.stop();
                expiry_timer.stop();
            });
            if (inbound) inbound->stop();
            if (outbound) outbound->stop();
            if (routes) routes->stop();
            signals.cancel();
            co_await drain();
            co_return;
        }
    }
};

Daemon::Daemon(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Daemon::~Daemon() = default;

int Daemon::run() {
    auto& d = *impl_;
    d.pool.start();
    if (d.inbound) d.inbound->start();
    if (d.outbound) d.outbound->start();
    if (d.routes) d.routes->start();
    d.side_pool.start();
    spawn(d.io, d.handle_signals(), "signal handling");
    d.tls.start();
    d.keeper.start();
    spawn(d.side, d.close_expired_loop(), "the expiry check of live connections");
    d.notifier.start_heartbeats();
    if (d.backend_monitor) d.backend_monitor->start();
    for (auto& p : d.probes) p->start();
    if (d.health) d.health->start();
    d.listeners_up = true;
    spawn(d.io, d.announce_ready(), "the readiness announcement");
    d.io.run();
    d.pool.join();
    return 0;
}

}  // namespace tunneld

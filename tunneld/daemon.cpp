#include "tunneld/daemon.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <openssl/ssl.h>
#include <unistd.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <optional>

#include "firewall/guard.hpp"
#include "firewall/nft_socket.hpp"
#include "tunneld/backend_monitor.hpp"
#include "tunneld/error.hpp"
#include "tunneld/file_watch.hpp"
#include "tunneld/health_routes.hpp"
#include "tunneld/health_server.hpp"
#include "tunneld/inbound.hpp"
#include "tunneld/outbound.hpp"
#include "tunneld/probe.hpp"
#include "tunneld/runtime.hpp"
#include "tunneld/spawn.hpp"

namespace tunneld {

namespace asio = boost::asio;

namespace {

unsigned worker_count(const Config& cfg) {
    if (cfg.workers) return cfg.workers;
    unsigned n = std::thread::hardware_concurrency();
    return std::clamp(n, 1u, 8u);
}

std::string summary(const Config& cfg, const TlsMaterial& m) {
    return "node " + cfg.node + ", " +
           (cfg.inbound ? "inbound on " + cfg.inbound->listen.front().to_string() + ", " : "") +
           std::to_string(cfg.peers.size()) + " peer(s), cert serial " + m.serial_hex + " (" +
           std::to_string(m.days_left()) + " days left)";
}

std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::int64_t unix_seconds(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// Every event loop stamps its heartbeat once a second; one that has not done
// so for this long is taken as wedged (liveness 503, no WATCHDOG=1).
constexpr std::int64_t kHeartbeatStaleMs = 5000;

}  // namespace

struct Daemon::Impl {
    Config config;
    asio::io_context io{1};
    IoPool pool;
    // Work that may block (DNS lookups, netlink round trips, reading TLS files)
    // runs here, never on the thread that accepts connections and answers signals.
    IoPool side_pool{1};
    asio::io_context& side = side_pool.at(0);
    // Fail closed: the guard goes up before anything that can fail on bad input
    // (TLS files, peers), so a node that refuses to start leaves it in place.
    std::optional<firewall::Guard> guard;
    std::optional<firewall::TableEvents> guard_events;
    asio::posix::stream_descriptor guard_fd{side};
    std::atomic<bool> firewall_applied{apply_guard()};
    Runtime rt;
    std::optional<InboundListener> inbound;
    std::optional<OutboundListener> outbound;
    asio::steady_timer resolve_timer{side};
    std::uint64_t guard_repairs = 0;
    std::vector<std::chrono::steady_clock::time_point> guard_recent;
    std::chrono::steady_clock::time_point guard_paused_until{};
    asio::signal_set signals{io, SIGHUP, SIGTERM, SIGINT};
    TlsFileWatch watch;
    asio::steady_timer expiry_timer{side};
    // Health: the peer probes, the backend check, the HTTP server, heartbeats.
    std::int64_t started_at = unix_now();
    std::vector<std::unique_ptr<PeerProbe>> probes;
    std::optional<BackendMonitor> backend_monitor;
    std::optional<HealthServer> health;
    std::unique_ptr<std::atomic<std::int64_t>[]> heartbeats;  // [0] = main loop, [1..] = workers
    std::atomic<bool> listeners_up{false};
    std::atomic<bool> stopping{false};
    std::atomic<std::uint64_t> firewall_repairs{0};
    std::atomic<std::uint64_t> resolve_failures{0};
    Latest<std::string> firewall_error;
    asio::steady_timer notify_timer{io};
    int warned_threshold = 1 << 30;      // smallest certificate expiry threshold warned about
    int warned_crl_threshold = 1 << 30;  // same for the CRL's nextUpdate

    explicit Impl(Config c)
        : config(std::move(c)),
          pool(worker_count(config)),
          rt(config, pool, initial_tls()),
          watch(side, tls_paths(config), std::chrono::seconds(1),
                [this] { rt.stats.count_reload(reload("files changed")); }) {
        if (config.inbound) inbound.emplace(rt, io);
        if (!config.peers.empty()) outbound.emplace(rt, io);
        for (const auto& peer : config.peers)
            probes.push_back(std::make_unique<PeerProbe>(rt, peer));
        if (BackendMonitor::wanted(config)) backend_monitor.emplace(config, io, rt.backend);
        heartbeats.reset(new std::atomic<std::int64_t>[pool.size() + 1]);
        for (std::size_t i = 0; i <= pool.size(); ++i) heartbeats[i] = steady_ms();
        if (config.health.enabled && !config.health.listen.empty())
            health.emplace(config.health.listen, [this](bool full) { return snapshot(full); });
    }

    // Applies the guard (when configured) before anything else can fail;
    // returns whether it did. Throws StartupError when it cannot be applied.
    bool apply_guard() {
        if (!config.firewall || !config.firewall->enabled) return false;
        guard.emplace(config);
        guard_events.emplace(config.firewall->table);  // before applying: no change goes unseen
        guard_fd.assign(::dup(guard_events->fd()));
        guard->apply();
        for (const auto& e : guard->resolve_errors())
            spdlog::warn("firewall: peer address not resolved (retried every {}): {}",
                         format_duration(config.firewall->resolve_interval), e);
        spdlog::info("firewall: table inet {} applied (prerouting, priority raw):\n{}",
                     config.firewall->table, firewall::describe(guard->spec()));
        return true;
    }

    // The TLS material for the first handshakes. When it cannot be loaded the
    // node refuses to start, and says that the guard it applied stays.
    std::shared_ptr<const TlsMaterial> initial_tls() {
        try {
            return load_tls_material(config.tls, config.node, 1);
        } catch (const StartupError& e) {
            if (!guard) throw;
            throw StartupError(
                std::string(e.what()) + " (the firewall guard, table inet " +
                config.firewall->table +
                ", stays in place: postgres and the tunnel port remain closed to outsiders)");
        }
    }

    // ------------------------------------------------------------- health

    bool loops_alive() const {
        if (stopping) return true;  // heartbeats end with the drain
        auto now = steady_ms();
        for (std::size_t i = 0; i <= pool.size(); ++i)
            if (now - heartbeats[i].load() > kHeartbeatStaleMs) return false;
        return true;
    }

    asio::awaitable<void> heartbeat(std::size_t slot) {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        while (!stopping) {
            heartbeats[slot] = steady_ms();
            timer.expires_after(std::chrono::seconds(1));
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }

    // Called on the health server's thread: everything read here is atomic or locked.
    Snapshot snapshot(bool full) {
        Snapshot s;
        s.node = config.node;
        s.version = TUNNELD_VERSION;
        s.now = unix_now();
        s.started_at = started_at;
        s.pid = ::getpid();
        s.workers_alive = loops_alive();
        s.stopping = stopping;
        s.listeners_up = listeners_up;
        auto m = rt.tls.load();
        s.cert_serial = m->serial_hex;
        s.cert_not_after = unix_seconds(m->not_after);
        s.reloads = rt.stats.reloads();
        s.internal_errors = internal_errors();
        if (config.inbound) {
            for (const auto& l : config.inbound->listen) s.inbound_listen.push_back(l.to_string());
            s.inbound_backend = config.inbound->backend.to_string();
        }
        for (const auto& p : probes)
            s.peers.push_back(PeerView{p->peer().name, p->peer().connect.to_string(),
                                       p->peer().local.to_string(), p->state()});
        for (const auto& [dir, peer, t] : rt.stats.all_traffic()) {
            TrafficView v{dir,
                          peer,
                          t->active.load(),
                          t->opened.load(),
                          t->bytes.from_tls.load(),
                          t->bytes.to_tls.load(),
                          t->last_handshake.load(),
                          {},
                          0};
            std::tie(v.last_error, v.last_error_at) = t->last_error();
            s.traffic.push_back(std::move(v));
        }
        for (auto dir : {Direction::inbound, Direction::outbound}) {
            for (std::size_t i = 0; i < kHandshakeFailureCount; ++i) {
                auto f = static_cast<HandshakeFailure>(i);
                s.handshakes[{dir, f == HandshakeFailure::none ? "ok" : to_string(f)}] =
                    rt.stats.handshakes(dir, f);
            }
            for (std::size_t i = 0; i < kCloseReasonCount; ++i) {
                auto r = static_cast<CloseReason>(i);
                s.closes[{dir, to_string(r)}] = rt.stats.closes(dir, r);
            }
        }
        if (guard) {
            s.firewall.enabled = true;
            s.firewall.table = config.firewall->table;
            s.firewall.applied = firewall_applied;
            s.firewall.error = firewall_error.get();
            s.firewall.repairs = firewall_repairs;
            s.firewall.resolve_failures = resolve_failures;
            if (full) {
                try {
                    for (const auto& [port, d] :
                         firewall::read_drop_counters(config.firewall->table))
                        s.firewall.drops[port] = {d.packets, d.bytes};
                } catch (const StartupError& e) {
                    s.firewall.error = std::string("cannot read the drop counters: ") + e.what();
                }
            }
        }
        s.backend_checked_by_config = BackendMonitor::wanted(config);
        s.postgres_configured = !config.health.postgres.empty();
        s.backend = rt.backend.get();
        return s;
    }

    // READY=1 once the listeners and the firewall are up (they are, by now),
    // the backend has been checked once and every peer probe has its first
    // answer or failure, or after
    // timeouts.connect + timeouts.handshake (at most 10 s) at the latest.
    asio::awaitable<void> announce_ready() {
        auto deadline = std::chrono::steady_clock::now() +
                        std::min<Duration>(config.timeouts.connect + config.timeouts.handshake,
                                           std::chrono::seconds(10));
        asio::steady_timer timer(io);
        for (;;) {
            bool all = std::all_of(probes.begin(), probes.end(),
                                   [](auto& p) { return p->state().probed; }) &&
                       (!backend_monitor || rt.backend.get().checked);
            if (all || std::chrono::steady_clock::now() >= deadline || stopping) break;
            timer.expires_after(std::chrono::milliseconds(20));
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        if (stopping) co_return;
        auto line = one_line_summary(snapshot(false));
        spdlog::info("tunneld {} ready: {}; {}", TUNNELD_VERSION, summary(config, *rt.tls.load()),
                     line);
        sd_notify(0, ("READY=1\nSTATUS=" + line).c_str());
        co_await notify_loop(line);
    }

    // WATCHDOG=1 at half of WatchdogSec while every event loop answers, and
    // STATUS= whenever the one-line summary changes (checked every 2 s).
    asio::awaitable<void> notify_loop(std::string last) {
        std::uint64_t watchdog_usec = 0;
        bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
        Duration period = std::chrono::seconds(2);
        if (watchdog)
            period = std::min(period, std::chrono::duration_cast<Duration>(
                                          std::chrono::microseconds(watchdog_usec / 2)));
        while (!stopping) {
            if (watchdog && loops_alive()) sd_notify(0, "WATCHDOG=1");
            auto line = one_line_summary(snapshot(false));
            if (line != last) {
                sd_notify(0, ("STATUS=" + line).c_str());
                last = line;
            }
            notify_timer.expires_after(period);
            auto [ec] = co_await notify_timer.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
        }
    }

    // Resolves peer names again and swaps the allowed addresses if they
    // changed. Returns false when the kernel refused the change (nothing was
    // recorded then, and the next call tries it again). Runs on `side`.
    bool refresh_firewall(const char* why) {
        if (!guard) return true;
        try {
            if (auto change = guard->refresh(); !change.empty())
                spdlog::info("firewall ({}): {}; allow sets swapped in one transaction", why,
                             change);
            for (const auto& e : guard->resolve_errors())
                spdlog::warn("firewall ({}): peer address not resolved: {}", why, e);
            resolve_failures = guard->resolve_failures();
            return true;
        } catch (const StartupError& e) {
            resolve_failures = guard->resolve_failures();
            spdlog::error("firewall ({}): update failed, the previous guard stays (retrying): {}",
                          why, e.what());
            return false;
        }
    }

    // Every resolve_interval; after a refused commit, again after 1 s, 2 s, 4 s ...
    // (at most resolve_interval) until the kernel takes it.
    asio::awaitable<void> resolve_loop() {
        Duration backoff = std::chrono::seconds(1), wait = config.firewall->resolve_interval;
        for (;;) {
            resolve_timer.expires_after(wait);
            auto [ec] = co_await resolve_timer.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            if (refresh_firewall("re-resolve")) {
                wait = config.firewall->resolve_interval;
                backoff = std::chrono::seconds(1);
            } else {
                wait = std::min<Duration>(backoff, config.firewall->resolve_interval);
                backoff *= 2;
            }
        }
    }

    // Someone changing or deleting the table (nft flush ruleset, a reload of
    // nftables.service, an element added by hand) would silently weaken the
    // guard: nf_tables tells us at once, and the configured table goes back.
    asio::awaitable<void> guard_watch() {
        for (;;) {
            auto [ec] = co_await guard_fd.async_wait(asio::posix::descriptor_base::wait_read,
                                                     asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            auto changes = guard_events->read();
            if (changes.empty()) continue;
            const auto& c = changes.back();
            std::string who = c.overrun ? std::string("someone (events were lost)")
                                        : (c.process.empty() ? "another process" : c.process) +
                                              (c.pid ? " (pid " + std::to_string(c.pid) + ")" : "");
            // Two daemons given the same firewall.table would undo each other forever:
            // after 5 repairs in 10 s, say so and pause repairs for a minute.
            auto now = std::chrono::steady_clock::now();
            if (now < guard_paused_until) {
                spdlog::warn(
                    "firewall: table inet {} changed by {} while repairs are paused; left as it is "
                    "until the pause ends",
                    config.firewall->table, who);
                continue;
            }
            std::erase_if(guard_recent, [&](auto t) { return now - t > std::chrono::seconds(10); });
            if (guard_recent.size() >= 5) {
                guard_paused_until = now + std::chrono::minutes(1);
                guard_recent.clear();
                spdlog::error(
                    "firewall: table inet {} keeps being changed by {} (5 times in 10 s); is "
                    "another "
                    "tunneld using the same firewall.table? Repairs paused for 1 minute",
                    config.firewall->table, who);
                continue;
            }
            guard_recent.push_back(now);
            try {
                if (c.pid == 0 && !c.overrun) {
                    if (!guard->heal())
                        continue;  // cannot tell our own changes apart: act only on a missing table
                } else {
                    guard->reapply();
                }
                ++guard_repairs;
                firewall_repairs = guard_repairs;
                firewall_applied = true;
                firewall_error.set("");
                spdlog::warn(
                    "firewall: table inet {} was changed by {}; put back as configured in one "
                    "transaction "
                    "({} time(s) since start)",
                    config.firewall->table, who, guard_repairs);
            } catch (const StartupError& e) {
                firewall_applied = false;
                firewall_error.set(std::string("changed by ") + who +
                                   " and could not be put back: " + e.what());
                spdlog::error(
                    "firewall: table inet {} was changed by {} and could not be put back: {}",
                    config.firewall->table, who, e.what());
            }
        }
    }

    void firewall_on_exit() {
        if (!guard) return;
        if (!config.firewall->remove_on_exit) {
            spdlog::info("firewall: table inet {} kept (on_exit: keep)", config.firewall->table);
            return;
        }
        try {
            guard->remove();
            spdlog::info("firewall: table inet {} removed (on_exit: remove)",
                         config.firewall->table);
        } catch (const StartupError& e) {
            spdlog::error("firewall: {}", e.what());
        }
    }

    static std::vector<std::string> tls_paths(const Config& c) {
        std::vector<std::string> paths{c.tls.ca, c.tls.cert, c.tls.key};
        if (!c.tls.crl.empty()) paths.push_back(c.tls.crl);
        return paths;
    }

    // Builds new material off to the side; on success new handshakes use it,
    // live connections keep theirs, and any whose peer is now revoked is closed.
    // Returns "" or why it failed; the caller counts it (after READY=1 for a
    // SIGHUP, so `tunneld reload` sees the count move only when all is done).
    std::string reload(const char* why) {
        auto old = rt.tls.load();
        try {
            auto fresh = load_tls_material(config.tls, config.node, old->generation + 1);
            rt.tls.store(fresh);
            spdlog::info(
                "reload ({}): TLS material replaced (cert serial {} -> {}, {} days left); "
                "live connections keep theirs",
                why, old->serial_hex, fresh->serial_hex, fresh->days_left());
            if (!config.tls.crl.empty())
                rt.connections.close_revoked(fresh, SSL_CTX_get_cert_store(fresh->server.get()));
            warned_threshold = warned_crl_threshold = 1 << 30;
            warn_expiry();
            return "";
        } catch (const StartupError& e) {
            spdlog::error("reload ({}) failed, still serving cert serial {}: {}", why,
                          old->serial_hex, e.what());
            return std::string(e.what()) + " (still serving cert serial " + old->serial_hex + ")";
        }
    }

    // Logs once per threshold as the certificate (30, 7, 1 days) or the CRL's
    // nextUpdate (7, 1 days; past it every peer is refused) comes near.
    void warn_expiry() {
        auto m = rt.tls.load();
        int days = m->days_left();
        for (int threshold : {1, 7, 30}) {
            if (days < threshold && threshold < warned_threshold) {
                spdlog::warn(
                    "certificate {} (serial {}) expires in {} day(s): rotate it "
                    "(tunneld certs rotate --peer {} --ca DIR)",
                    config.tls.cert, m->serial_hex, days, config.path);
                warned_threshold = threshold;
                break;
            }
        }
        if (!m->crl_next_update) return;
        auto left = *m->crl_next_update - std::chrono::system_clock::now();
        int crl_days = static_cast<int>(std::chrono::floor<std::chrono::hours>(left).count() / 24);
        for (int threshold : {1, 7}) {
            if (crl_days < threshold && threshold < warned_crl_threshold) {
                spdlog::warn(
                    "CRL {} reaches its nextUpdate in {} day(s); after that every peer is "
                    "refused: publish a fresh one (tunneld certs crl --ca DIR --out {})",
                    config.tls.crl, crl_days, config.tls.crl);
                warned_crl_threshold = threshold;
                break;
            }
        }
    }

    asio::awaitable<void> expiry_checks() {
        for (;;) {
            warn_expiry();
            expiry_timer.expires_after(std::chrono::hours(1));
            auto [ec] = co_await expiry_timer.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
        }
    }

    asio::awaitable<void> drain() {
        auto deadline = std::chrono::steady_clock::now() + config.timeouts.shutdown;
        asio::steady_timer timer(io);
        spdlog::info("stopping: no new connections; draining {} live connection(s) for up to {}",
                     rt.connections.size(), format_duration(config.timeouts.shutdown));
        // A second for what ends by itself (a query finishing); then the rest,
        // replication connections that never end by themselves, are ended
        // gracefully: the plaintext side is no longer read, the half-close
        // travels through both tunnels to postgres and back, so the drain takes
        // a round trip, not timeouts.shutdown. Their clients reconnect and resume.
        auto grace = std::chrono::steady_clock::now() +
                     std::min<Duration>(config.timeouts.shutdown, std::chrono::seconds(1));
        while (rt.connections.size() > 0 && std::chrono::steady_clock::now() < grace) {
            timer.expires_after(std::chrono::milliseconds(50));
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        if (auto left = rt.connections.size()) {
            spdlog::info(
                "stopping: ending {} connection(s) gracefully: no more reading from the local "
                "side, what "
                "is in flight is delivered, then both ends see a clean close",
                left);
            rt.connections.quiesce_all();
        }
        while (rt.connections.size() > 0 && std::chrono::steady_clock::now() < deadline) {
            timer.expires_after(std::chrono::milliseconds(50));
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        if (auto left = rt.connections.size()) {
            spdlog::warn("stopping: closing {} connection(s) still open after {}", left,
                         format_duration(config.timeouts.shutdown));
            rt.connections.close_all();
            auto hard = std::chrono::steady_clock::now() + std::chrono::seconds(5);
            while (rt.connections.size() > 0 && std::chrono::steady_clock::now() < hard) {
                timer.expires_after(std::chrono::milliseconds(20));
                co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
            }
        }
        if (health) health->stop();
        pool.stop_when_idle();
        side_pool.stop_when_idle();
        side_pool.join();  // its work was cancelled above; nothing else touches the guard now
        firewall_on_exit();
        spdlog::info("stopped");
    }

    asio::awaitable<void> handle_signals() {
        for (;;) {
            auto [ec, signo] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            if (signo == SIGHUP) {
                sd_notify(0, "RELOADING=1");
                asio::post(side, [this] {
                    auto failure = reload("SIGHUP");
                    refresh_firewall("SIGHUP");
                    sd_notify(0, ("READY=1\nSTATUS=" + one_line_summary(snapshot(false))).c_str());
                    rt.stats.count_reload(failure);
                });
                continue;
            }
            sd_notify(0, "STOPPING=1");
            stopping = true;
            notify_timer.cancel();
            for (auto& p : probes) p->stop();
            if (backend_monitor) backend_monitor->stop();
            rt.connections.close_all(true);  // peers' probes: nothing to drain
            asio::post(side, [this] {
                watch.stop();
                expiry_timer.cancel();
                resolve_timer.cancel();
                error_code ignored;
                guard_fd.close(ignored);
            });
            if (inbound) inbound->stop();
            if (outbound) outbound->stop();
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
    d.side_pool.start();
    spawn(d.io, d.handle_signals(), "signal handling");
    spawn(d.side, d.expiry_checks(), "the certificate expiry check");
    if (d.guard) {
        spawn(d.side, d.resolve_loop(), "the firewall's re-resolve loop");
        spawn(d.side, d.guard_watch(), "the firewall's table watch");
    }
    asio::post(d.side, [&d] { d.watch.start(); });
    spawn(d.io, d.heartbeat(0), "a heartbeat");
    for (std::size_t i = 0; i < d.pool.size(); ++i)
        spawn(d.pool.at(i), d.heartbeat(i + 1), "a heartbeat");
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

#include "tunneld/daemon.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <optional>

#include "tunneld/error.hpp"
#include "tunneld/inbound.hpp"
#include "tunneld/outbound.hpp"
#include "tunneld/runtime.hpp"

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

}  // namespace

struct Daemon::Impl {
    Config config;
    asio::io_context io{1};
    IoPool pool;
    Runtime rt;
    std::optional<InboundListener> inbound;
    std::optional<OutboundListener> outbound;
    asio::signal_set signals{io, SIGHUP, SIGTERM, SIGINT};

    explicit Impl(Config c)
        : config(std::move(c)),
          pool(worker_count(config)),
          rt(config, pool, load_tls_material(config.tls, config.node, 1)) {
        if (config.inbound) inbound.emplace(rt, io);
        if (!config.peers.empty()) outbound.emplace(rt, io);
    }

    void reload() {
        auto old = rt.tls.load();
        try {
            auto fresh = load_tls_material(config.tls, config.node, old->generation + 1);
            rt.tls.store(fresh);
            spdlog::info("reload: TLS material replaced (cert serial {} -> {}, {} days left); "
                         "live connections keep theirs",
                         old->serial_hex, fresh->serial_hex, fresh->days_left());
        } catch (const StartupError& e) {
            spdlog::error("reload failed, still serving cert serial {}: {}", old->serial_hex,
                          e.what());
        }
    }

    asio::awaitable<void> drain() {
        auto deadline = std::chrono::steady_clock::now() + config.timeouts.shutdown;
        asio::steady_timer timer(io);
        spdlog::info("stopping: no new connections; draining {} live connection(s) for up to {}",
                     rt.connections.size(), format_duration(config.timeouts.shutdown));
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
        pool.stop_when_idle();
        spdlog::info("stopped");
    }

    asio::awaitable<void> handle_signals() {
        for (;;) {
            auto [ec, signo] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            if (signo == SIGHUP) {
                sd_notify(0, "RELOADING=1");
                reload();
                sd_notify(0, ("READY=1\nSTATUS=" + summary(config, *rt.tls.load())).c_str());
                continue;
            }
            sd_notify(0, "STOPPING=1");
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
    asio::co_spawn(d.io, d.handle_signals(), asio::detached);
    auto material = d.rt.tls.load();
    spdlog::info("tunneld {} ready: {}", TUNNELD_VERSION, summary(d.config, *material));
    sd_notify(0, ("READY=1\nSTATUS=" + summary(d.config, *material)).c_str());
    d.io.run();
    d.pool.join();
    return 0;
}

}  // namespace tunneld

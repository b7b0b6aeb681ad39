#include "tunneld/tls/reloader.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "tunneld/error.hpp"
#include "tunneld/net/spawn.hpp"

namespace tunneld {

namespace asio = boost::asio;

std::vector<std::string> TlsReloader::paths(const Config& c) {
    std::vector<std::string> out{c.tls.ca, c.tls.cert, c.tls.key};
    if (!c.tls.crl.empty()) out.push_back(c.tls.crl);
    return out;
}

TlsReloader::TlsReloader(const Config& cfg, std::atomic<Material>& current, asio::io_context& side,
                         std::function<void(const Material&)> on_new,
                         std::function<void(const Result<void>&)> on_watch_reload)
    : cfg_(cfg),
      current_(current),
      side_(side),
      on_new_(std::move(on_new)),
      watch_(side, paths(cfg), std::chrono::seconds(1),
             [this, report = std::move(on_watch_reload)] { report(reload("files changed")); }),
      expiry_timer_(side) {}

void TlsReloader::start() {
    asio::post(side_, [this] { watch_.start(); });
    spawn(side_, expiry_checks(), "the certificate expiry check");
}

void TlsReloader::stop() {
    watch_.stop();
    expiry_timer_.stop();
}

Result<void> TlsReloader::reload(const char* why) {
    auto old = current_.load();
    try {
        auto fresh = load_tls_material(cfg_.tls, cfg_.node, old->generation + 1);
        current_.store(fresh);
        spdlog::info(
            "reload ({}): TLS material replaced (cert serial {} -> {}, {} days left); live "
            "connections keep theirs",
            why, old->serial_hex, fresh->serial_hex, fresh->days_left());
        if (on_new_) on_new_(fresh);
        warned_threshold_ = warned_crl_threshold_ = 1 << 30;
        warn_expiry();
        return {};
    } catch (const StartupError& e) {
        spdlog::error("reload ({}) failed, still serving cert serial {}: {}", why, old->serial_hex,
                      e.what());
        return Problem{std::string(e.what()) + " (still serving cert serial " + old->serial_hex +
                       ")"};
    }
}

void TlsReloader::warn_expiry() {
    auto m = current_.load();
    int days = m->days_left();
    for (int threshold : {1, 7, 30}) {
        if (days < threshold && threshold < warned_threshold_) {
            spdlog::warn(
                "certificate {} (serial {}) expires in {} day(s): rotate it (tunneld certs rotate "
                "--peer {} --ca DIR)",
                cfg_.tls.cert, m->serial_hex, days, cfg_.path);
            warned_threshold_ = threshold;
            break;
        }
    }
    if (!m->crl_next_update) return;
    auto left = *m->crl_next_update - std::chrono::system_clock::now();
    int crl_days = static_cast<int>(std::chrono::floor<std::chrono::hours>(left).count() / 24);
    for (int threshold : {1, 7}) {
        if (crl_days < threshold && threshold < warned_crl_threshold_) {
            spdlog::warn(
                "CRL {} reaches its nextUpdate in {} day(s); after that every peer is refused: "
                "publish a fresh one (tunneld certs crl --ca DIR --out {})",
                cfg_.tls.crl, crl_days, cfg_.tls.crl);
            warned_crl_threshold_ = threshold;
            break;
        }
    }
}

asio::awaitable<void> TlsReloader::expiry_checks() {
    for (;;) {
        warn_expiry();
        bool go_on = co_await expiry_timer_.sleep(std::chrono::hours(1));
        if (!go_on) co_return;
    }
}

}  // namespace tunneld

// Keeps the node's TLS material current: reloads it when the files change
// (TlsFileWatch) or when asked (SIGHUP), building the new material off to the
// side and swapping it in only when it is complete and valid (live connections
// keep theirs), and warns as the certificate (30, 7, 1 days) or the CRL's
// nextUpdate (7, 1 days) comes near. Runs on the `side` io_context.
#pragma once
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <string>

#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/net/ticker.hpp"
#include "tunneld/tls/context.hpp"
#include "tunneld/tls/file_watch.hpp"

namespace tunneld {

class TlsReloader {
  public:
    using Material = std::shared_ptr<const TlsMaterial>;
    // `current` is where handshakes read the material from. `on_new` runs after
    // each successful swap (closing connections of peers now revoked);
    // `on_watch_reload` gets the result of each reload the file watch made.
    TlsReloader(const Config& cfg, std::atomic<Material>& current, boost::asio::io_context& side,
                std::function<void(const Material&)> on_new,
                std::function<void(const Result<void>&)> on_watch_reload);

    // Starts the file watch and the hourly expiry check.
    void start();
    // Ends both. Call on `side`.
    void stop();
    // Reads the files now; fails with why the new material was refused (the
    // old one keeps serving; the reason names its serial).
    Result<void> reload(const char* why);

    static std::vector<std::string> paths(const Config& cfg);

  private:
    void warn_expiry();
    boost::asio::awaitable<void> expiry_checks();

    const Config& cfg_;
    std::atomic<Material>& current_;
    boost::asio::io_context& side_;
    std::function<void(const Material&)> on_new_;
    TlsFileWatch watch_;
    Ticker expiry_timer_;
    int warned_threshold_ = 1 << 30;      // smallest certificate expiry threshold warned about
    int warned_crl_threshold_ = 1 << 30;  // same for the CRL's nextUpdate
};

}  // namespace tunneld

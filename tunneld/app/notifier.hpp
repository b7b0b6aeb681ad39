// What systemd hears from the daemon (Type=notify, WatchdogSec): READY=1 with
// a STATUS= line once the node is up, STATUS= again whenever the one-line
// summary changes, WATCHDOG=1 while every event loop answers its heartbeat,
// RELOADING=1 / READY=1 around a SIGHUP and STOPPING=1. Without
// $NOTIFY_SOCKET every notification is a no-op (sd_notify's).
#pragma once
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tunneld/config/duration.hpp"
#include "tunneld/net/io_pool.hpp"

namespace tunneld {

// "STATUS=<line>" with `line` made one line of printable ASCII (printable.hpp,
// at most 1 KiB): the only form in which a summary reaches sd_notify.
std::string status_assignment(const std::string& line);

class Notifier {
  public:
    // `status_line` gives the current one-line summary (called on `io`'s thread).
    Notifier(boost::asio::io_context& io, IoPool& pool, std::function<std::string()> status_line);

    // Every event loop (`io` and each of `pool`) stamps a heartbeat once a second.
    void start_heartbeats();
    // Every loop stamped within the last 5 s (always true once stopping).
    bool loops_alive() const;

    // Waits until `ready()` or `max_wait`, then logs `log_ready(status)`, sends
    // READY=1 and keeps STATUS= and WATCHDOG=1 going until stopping().
    // `ready()` is asked again after each poke(), not on a clock, and a poke()
    // after READY=1 sends a changed STATUS= at once.
    boost::asio::awaitable<void> announce_ready(std::function<bool()> ready, Duration max_wait,
                                                std::function<void(const std::string&)> log_ready);
    // Something `ready()` reads has changed. Thread-safe.
    void poke();
    void reloading();
    void reloaded();  // READY=1 with the current STATUS=
    void stopping();
    bool is_stopping() const { return stopping_; }

  private:
    boost::asio::awaitable<void> heartbeat(std::size_t slot);
    boost::asio::awaitable<void> notify_loop(std::string last);

    boost::asio::io_context& io_;
    IoPool& pool_;
    std::function<std::string()> status_line_;
    std::unique_ptr<std::atomic<std::int64_t>[]> heartbeats_;  // [0] = io, [1..] = pool
    std::atomic<bool> stopping_{false};
    boost::asio::steady_timer
        timer_;  // max_wait, then the STATUS=/WATCHDOG= period; poke() ends a wait
};

}  // namespace tunneld

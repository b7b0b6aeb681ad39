#include "tunneld/app/notifier.hpp"

#include <systemd/sd-daemon.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "tunneld/base/printable.hpp"
#include "tunneld/net/spawn.hpp"

namespace tunneld {

namespace asio = boost::asio;

namespace {

std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// A loop that has not stamped its heartbeat for this long is taken as wedged
// (liveness 503, no WATCHDOG=1).
constexpr std::int64_t kHeartbeatStaleMs = 5000;

}  // namespace

// The summary holds
// text from peers (their postgres errors); a newline there would start a new
// assignment in the datagram ("\nWATCHDOG=trigger" makes systemd act on it).
std::string status_assignment(const std::string& line) { return "STATUS=" + printable(line, 1024); }

Notifier::Notifier(asio::io_context& io, IoPool& pool, std::function<std::string()> status_line)
    : io_(io),
      pool_(pool),
      status_line_(std::move(status_line)),
      heartbeats_(new std::atomic<std::int64_t>[pool.size() + 1]),
      timer_(io) {
    for (std::size_t i = 0; i <= pool_.size(); ++i) heartbeats_[i] = steady_ms();
}

void Notifier::start_heartbeats() {
    spawn(io_, heartbeat(0), "a heartbeat");
    for (std::size_t i = 0; i < pool_.size(); ++i)
        spawn(pool_.at(i), heartbeat(i + 1), "a heartbeat");
}

bool Notifier::loops_alive() const {
    if (stopping_) return true;  // heartbeats end with the drain
    auto now = steady_ms();
    for (std::size_t i = 0; i <= pool_.size(); ++i)
        if (now - heartbeats_[i].load() > kHeartbeatStaleMs) return false;
    return true;
}

asio::awaitable<void> Notifier::heartbeat(std::size_t slot) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (!stopping_) {
        heartbeats_[slot] = steady_ms();
        timer.expires_after(std::chrono::seconds(1));
        co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

asio::awaitable<void> Notifier::announce_ready(std::function<bool()> ready, Duration max_wait,
                                               std::function<void(const std::string&)> log_ready) {
    auto deadline = std::chrono::steady_clock::now() + max_wait;
    while (!ready() && !stopping_ && std::chrono::steady_clock::now() < deadline) {
        timer_.expires_at(deadline);
        co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));  // poke() cancels it
    }
    if (stopping_) co_return;
    auto line = status_line_();
    log_ready(line);
    sd_notify(0, ("READY=1\n" + status_assignment(line)).c_str());
    co_await notify_loop(line);
}

// WATCHDOG=1 at half of WatchdogSec while every event loop answers, and
// STATUS= whenever the one-line summary changes: at once after a poke() (a
// probe or backend result), and every 2 s for what changes on its own.
asio::awaitable<void> Notifier::notify_loop(std::string last) {
    std::uint64_t watchdog_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
    Duration period = std::chrono::seconds(2);
    if (watchdog)
        period = std::min(period, std::chrono::duration_cast<Duration>(
                                      std::chrono::microseconds(watchdog_usec / 2)));
    auto next_tick = std::chrono::steady_clock::now();
    while (!stopping_) {
        auto now = std::chrono::steady_clock::now();
        if (now >= next_tick) {
            if (watchdog && loops_alive()) sd_notify(0, "WATCHDOG=1");
            next_tick = now + period;
        }
        auto line = status_line_();
        if (line != last) {
            sd_notify(0, status_assignment(line).c_str());
            last = line;
        }
        timer_.expires_at(next_tick);
        co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));  // poke() wakes it early
    }
}

void Notifier::poke() {
    // On io_'s thread, so it cannot fall between a ready() or status_line_()
    // and the wait after it: either that call saw the change or the wait ends.
    asio::post(io_, [this] { timer_.cancel(); });
}

void Notifier::reloading() { sd_notify(0, "RELOADING=1"); }

void Notifier::reloaded() {
    sd_notify(0, ("READY=1\n" + status_assignment(status_line_())).c_str());
}

void Notifier::stopping() {
    sd_notify(0, "STOPPING=1");
    stopping_ = true;
    timer_.cancel();
}

}  // namespace tunneld

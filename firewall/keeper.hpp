// The running daemon's side of the guard: applies it first (before anything
// that can fail on bad input, so a node that refuses to start stays guarded),
// re-resolves the peers every firewall.resolve_interval (retrying a refused
// commit with backoff), and puts the table back when another process changes
// or deletes it. After 5 repairs in 10 s it pauses for kPause (two daemons
// sharing one table would undo each other forever), but never leaves the
// table missing: when the pause ends a missing table is put back at once, and
// so is one that a process other than a tunneld changed meanwhile. Every
// kVerifyEvery and every re-resolve round it also checks that the table is
// there (events can be lost). While the table is missing status() says so
// (applied=false, /readiness 503) and `missing` counts each time it was found
// gone. Everything after the constructor runs on the `side` io_context, never
// on the thread that accepts connections.
#pragma once
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "firewall/guard.hpp"
#include "firewall/nft_socket.hpp"
#include "tunneld/net/ticker.hpp"

namespace tunneld::firewall {

// Where outside changes to the table come from: nf_tables' event group
// (TableEvents) in the daemon, a script in the unit tests.
class ChangeFeed {
  public:
    virtual ~ChangeFeed() = default;
    virtual int fd() const = 0;  // readable when changes are queued
    virtual std::vector<TableEvents::Change> read() = 0;
};

// When the resolve loop tries again: resolve_interval after a success; after
// the 1st, 2nd, 3rd ... failure in a row 1 s, 2 s, 4 s ... (never more than
// resolve_interval), so a kernel that refused a commit is asked again soon.
class RetryBackoff {
  public:
    explicit RetryBackoff(Duration interval) : interval_(interval) {}
    Duration after(bool ok);

  private:
    Duration interval_;
    int failures_ = 0;
};

class Keeper {
  public:
    struct Status {
        bool applied = false;
        std::string error;  // why not applied / the last repair that failed
        std::uint64_t repairs = 0;
        std::uint64_t resolve_failures = 0;
        std::uint64_t missing = 0;  // times the table was found deleted (then put back)
    };
    static constexpr std::chrono::seconds kPause{3};
    static constexpr std::chrono::seconds kVerifyEvery{5};

    // Applies the guard now when the config has an enabled `firewall:` block
    // (otherwise does nothing and enabled() is false). Throws StartupError when
    // it cannot (no CAP_NET_ADMIN, no nf_tables).
    Keeper(const Config& cfg, boost::asio::io_context& side);
    // The same with the outside world replaced (unit tests): DNS, the kernel's
    // nf_tables and the feed of outside changes.
    Keeper(const Config& cfg, boost::asio::io_context& side, Resolver& resolver, Netlink& netlink,
           std::unique_ptr<ChangeFeed> feed);
    ~Keeper();

    bool enabled() const { return guard_.has_value(); }
    // Starts the resolve loop and the watch for outside changes (on `side`).
    void start();
    // Resolves peer names again and swaps the allowed addresses if they
    // changed. Returns false when the kernel refused (nothing recorded; the
    // next call tries again). Call on `side`.
    bool refresh(const char* why);
    // Ends the loops. Call on `side`.
    void stop();
    // On exit: keeps the table (on_exit: keep) or removes it.
    void on_exit();

    // From any thread.
    Status status() const;

  private:
    boost::asio::awaitable<void> resolve_loop();
    boost::asio::awaitable<void> watch();
    boost::asio::awaitable<void> verify_loop();
    void repair(const TableEvents::Change& c);
    // Starts a pause of kPause after too many repairs; end_pause() follows.
    void pause(const std::string& who);
    void end_pause();
    // Puts the table back if it is gone; `why` says who noticed. Returns
    // whether it was gone. Records applied/missing/error either way.
    bool verify(const std::string& why);
    // The table is gone and stays gone for now (paused): says so once.
    void note_missing(const std::string& why);
    void put_back(const std::string& what, bool was_missing);  // "changed by nft (pid 7)"

    const Config& cfg_;
    boost::asio::io_context& side_;
    std::optional<Guard> guard_;
    std::unique_ptr<ChangeFeed> events_;
    boost::asio::posix::stream_descriptor events_fd_;
    Ticker resolve_timer_;
    boost::asio::steady_timer pause_timer_;
    Ticker verify_timer_;
    bool stopped_ = false;  // on side_'s thread
    std::vector<std::chrono::steady_clock::time_point> recent_repairs_;
    std::chrono::steady_clock::time_point paused_until_{};
    bool changed_while_paused_ = false;  // by a process that is not a tunneld
    bool missing_noted_ = false;         // note_missing() said it since the table was last seen
    mutable std::mutex mutex_;           // guards status_
    Status status_;
};

}  // namespace tunneld::firewall

#include "firewall/keeper.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "tunneld/error.hpp"
#include "tunneld/net/spawn.hpp"

namespace tunneld::firewall {

namespace asio = boost::asio;

namespace {

class KernelFeed final : public ChangeFeed {
  public:
    explicit KernelFeed(std::string table) : events_(std::move(table)) {}
    int fd() const override { return events_.fd(); }
    std::vector<TableEvents::Change> read() override { return events_.read(); }

  private:
    TableEvents events_;
};

}  // namespace

Keeper::Keeper(const Config& cfg, asio::io_context& side)
    : Keeper(cfg, side, system_resolver(), kernel_netlink(), nullptr) {}

Keeper::Keeper(const Config& cfg, asio::io_context& side, Resolver& resolver, Netlink& netlink,
               std::unique_ptr<ChangeFeed> feed)
    : cfg_(cfg), side_(side), events_fd_(side), resolve_timer_(side) {
    if (!cfg.firewall || !cfg.firewall->enabled) return;
    guard_.emplace(cfg, resolver, netlink);
    // Subscribed before applying: no change goes unseen.
    events_ = feed ? std::move(feed) : std::make_unique<KernelFeed>(cfg.firewall->table);
    events_fd_.assign(::dup(events_->fd()));
    guard_->apply();
    status_.applied = true;
    for (const auto& e : guard_->resolve_errors())
        spdlog::warn("firewall: peer address not resolved (retried every {}): {}",
                     format_duration(cfg.firewall->resolve_interval), e);
    spdlog::info("firewall: table inet {} applied (prerouting, priority raw):\n{}",
                 cfg.firewall->table, describe(guard_->spec()));
}

Keeper::~Keeper() = default;

void Keeper::start() {
    if (!guard_) return;
    spawn(side_, resolve_loop(), "the firewall's re-resolve loop");
    spawn(side_, watch(), "the firewall's table watch");
}

Keeper::Status Keeper::status() const {
    std::lock_guard lock(mutex_);
    return status_;
}

bool Keeper::refresh(const char* why) {
    if (!guard_) return true;
    bool ok = true;
    try {
        if (auto change = guard_->refresh(); !change.empty())
            spdlog::info("firewall ({}): {}; allow sets swapped in one transaction", why, change);
        for (const auto& e : guard_->resolve_errors())
            spdlog::warn("firewall ({}): peer address not resolved: {}", why, e);
    } catch (const StartupError& e) {
        spdlog::error("firewall ({}): update failed, the previous guard stays (retrying): {}", why,
                      e.what());
        ok = false;
    }
    std::lock_guard lock(mutex_);
    status_.resolve_failures = guard_->resolve_failures();
    return ok;
}

// Every resolve_interval; after a refused commit, again after 1 s, 2 s, 4 s ...
// (at most resolve_interval) until the kernel takes it.
asio::awaitable<void> Keeper::resolve_loop() {
    Duration backoff = std::chrono::seconds(1), wait = cfg_.firewall->resolve_interval;
    for (;;) {
        resolve_timer_.expires_after(wait);
        auto [ec] = co_await resolve_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
        if (refresh("re-resolve")) {
            wait = cfg_.firewall->resolve_interval;
            backoff = std::chrono::seconds(1);
        } else {
            wait = std::min<Duration>(backoff, cfg_.firewall->resolve_interval);
            backoff *= 2;
        }
    }
}

// Someone changing or deleting the table (nft flush ruleset, a reload of
// nftables.service, an element added by hand) would silently weaken the
// guard: nf_tables tells us at once, and the configured table goes back.
asio::awaitable<void> Keeper::watch() {
    for (;;) {
        auto [ec] = co_await events_fd_.async_wait(asio::posix::descriptor_base::wait_read,
                                                   asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
        auto changes = events_->read();
        if (!changes.empty()) repair(changes.back());
    }
}

void Keeper::repair(const TableEvents::Change& c) {
    const auto& table = cfg_.firewall->table;
    std::string who = c.overrun ? std::string("someone (events were lost)")
                                : (c.process.empty() ? "another process" : c.process) +
                                      (c.pid ? " (pid " + std::to_string(c.pid) + ")" : "");
    auto now = std::chrono::steady_clock::now();
    if (now < paused_until_) {
        spdlog::warn(
            "firewall: table inet {} changed by {} while repairs are paused; left as it is until "
            "the pause ends",
            table, who);
        return;
    }
    std::erase_if(recent_repairs_, [&](auto t) { return now - t > std::chrono::seconds(10); });
    if (recent_repairs_.size() >= 5) {
        paused_until_ = now + std::chrono::minutes(1);
        recent_repairs_.clear();
        spdlog::error(
            "firewall: table inet {} keeps being changed by {} (5 times in 10 s); is another "
            "tunneld using the same firewall.table? Repairs paused for 1 minute",
            table, who);
        return;
    }
    recent_repairs_.push_back(now);
    try {
        if (c.pid == 0 && !c.overrun) {
            if (!guard_->heal())
                return;  // cannot tell our own changes apart: act only on a missing table
        } else {
            guard_->reapply();
        }
        std::uint64_t repairs;
        {
            std::lock_guard lock(mutex_);
            repairs = ++status_.repairs;
            status_.applied = true;
            status_.error.clear();
        }
        spdlog::warn(
            "firewall: table inet {} was changed by {}; put back as configured in one transaction "
            "({} time(s) since start)",
            table, who, repairs);
    } catch (const StartupError& e) {
        {
            std::lock_guard lock(mutex_);
            status_.applied = false;
            status_.error = "changed by " + who + " and could not be put back: " + e.what();
        }
        spdlog::error("firewall: table inet {} was changed by {} and could not be put back: {}",
                      table, who, e.what());
    }
}

void Keeper::stop() {
    resolve_timer_.cancel();
    boost::system::error_code ignored;
    events_fd_.close(ignored);
}

void Keeper::on_exit() {
    if (!guard_) return;
    if (!cfg_.firewall->remove_on_exit) {
        spdlog::info("firewall: table inet {} kept (on_exit: keep)", cfg_.firewall->table);
        return;
    }
    try {
        guard_->remove();
        spdlog::info("firewall: table inet {} removed (on_exit: remove)", cfg_.firewall->table);
    } catch (const StartupError& e) {
        spdlog::error("firewall: {}", e.what());
    }
}

}  // namespace tunneld::firewall

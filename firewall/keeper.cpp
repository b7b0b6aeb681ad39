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
    : cfg_(cfg),
      side_(side),
      events_fd_(side),
      resolve_timer_(side),
      pause_timer_(side),
      verify_timer_(side) {
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
    // One journal entry per line: the log formatter escapes newlines.
    spdlog::info("firewall: table inet {} applied (prerouting, priority raw):",
                 cfg.firewall->table);
    std::string lines = describe(guard_->spec());
    for (std::size_t at = 0, nl; (nl = lines.find('\n', at)) != std::string::npos; at = nl + 1)
        spdlog::info("firewall: {}", lines.substr(at, nl - at));
}

Keeper::~Keeper() = default;

void Keeper::start() {
    if (!guard_) return;
    spawn(side_, resolve_loop(), "the firewall's re-resolve loop");
    spawn(side_, watch(), "the firewall's table watch");
    spawn(side_, verify_loop(), "the firewall's table check");
}

Keeper::Status Keeper::status() const {
    std::lock_guard lock(mutex_);
    return status_;
}

bool Keeper::refresh(const char* why) {
    if (!guard_) return true;
    bool ok = true;
    try {
        verify(std::string("the ") + why + " round");
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

Duration RetryBackoff::after(bool ok) {
    if (ok) {
        failures_ = 0;
        return interval_;
    }
    Duration wait = std::chrono::seconds(1);
    for (int i = 0; i < failures_ && wait < interval_; ++i) wait *= 2;
    ++failures_;
    return std::min(wait, interval_);
}

// Every resolve_interval; after a refused commit, again after 1 s, 2 s, 4 s ...
// (at most resolve_interval) until the kernel takes it.
asio::awaitable<void> Keeper::resolve_loop() {
    RetryBackoff backoff(cfg_.firewall->resolve_interval);
    Duration wait = cfg_.firewall->resolve_interval;
    for (;;) {
        bool go_on = co_await resolve_timer_.sleep(wait);
        if (!go_on) co_return;
        wait = backoff.after(refresh("re-resolve"));
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

// Every kVerifyEvery: the table is still there (a lost event, a change
// during a pause that nobody told us about).
asio::awaitable<void> Keeper::verify_loop() {
    for (;;) {
        bool go_on = co_await verify_timer_.sleep(kVerifyEvery);
        if (!go_on) co_return;
        try {
            verify("the periodic check");
        } catch (const StartupError& e) {
            spdlog::error("firewall: cannot check table inet {}: {}", cfg_.firewall->table,
                          e.what());
        }
    }
}

bool Keeper::verify(const std::string& why) {
    if (guard_->table_exists()) {
        if (missing_noted_) {  // put back by someone else (another tunneld, an admin)
            std::lock_guard lock(mutex_);
            status_.applied = true;
            status_.error.clear();
        }
        missing_noted_ = false;
        return false;
    }
    if (std::chrono::steady_clock::now() < paused_until_) {
        note_missing(why);
        return true;
    }
    try {
        guard_->reapply();
        put_back("found missing by " + why, true);
    } catch (const StartupError& e) {
        note_missing(why);
        std::lock_guard lock(mutex_);
        status_.error += "; putting it back failed: " + std::string(e.what());
    }
    return true;
}

void Keeper::note_missing(const std::string& why) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        paused_until_ - std::chrono::steady_clock::now());
    std::string text = "table inet " + cfg_.firewall->table + " is missing (seen by " + why + ")";
    if (left.count() > 0)
        text += "; repairs are paused, it is put back in " + format_duration(left);
    {
        std::lock_guard lock(mutex_);
        status_.applied = false;
        status_.error = text;
        if (!missing_noted_) ++status_.missing;
    }
    if (!missing_noted_) spdlog::warn("firewall: {}: nothing is guarded meanwhile", text);
    missing_noted_ = true;
}

void Keeper::put_back(const std::string& what, bool was_missing) {
    std::uint64_t repairs;
    {
        std::lock_guard lock(mutex_);
        repairs = ++status_.repairs;
        if (was_missing && !missing_noted_) ++status_.missing;
        status_.applied = true;
        status_.error.clear();
    }
    missing_noted_ = false;
    spdlog::warn(
        "firewall: table inet {} was {}; put back as configured in one transaction "
        "({} time(s) since start)",
        cfg_.firewall->table, what, repairs);
}

namespace {

// nf_tables names the thread that sent a batch: a tunneld's keeper runs on
// its "td-side-0" thread (IoPool names them), an older one's on "tunneld".
bool is_tunneld(const std::string& process) {
    return process == "tunneld" || process.starts_with("td-");
}

}  // namespace

void Keeper::repair(const TableEvents::Change& c) {
    const auto& table = cfg_.firewall->table;
    const bool by_tunneld = is_tunneld(c.process);
    std::string who = c.overrun ? std::string("someone (events were lost)")
                                : (c.process.empty() ? "another process"
                                   : by_tunneld      ? std::string("tunneld")
                                                     : c.process) +
                                      (c.pid ? " (pid " + std::to_string(c.pid) + ")" : "");
    auto now = std::chrono::steady_clock::now();
    if (now < paused_until_) {
        // Another tunneld's change is its own guard (two daemons sharing one
        // table): left alone. Anyone else's is undone when the pause ends.
        if (!by_tunneld) changed_while_paused_ = true;
        if (!guard_->table_exists()) {
            note_missing(who);
            return;
        }
        spdlog::warn(
            "firewall: table inet {} changed by {} while repairs are paused; {} when the pause "
            "ends",
            table, who, by_tunneld ? "left as it is" : "put back");
        return;
    }
    try {
        const bool missing = !guard_->table_exists();
        if (c.pid == 0 && !c.overrun && !missing)
            return;  // cannot tell our own changes apart: act only on a missing table
        std::erase_if(recent_repairs_, [&](auto t) { return now - t > std::chrono::seconds(10); });
        if (recent_repairs_.size() >= 5) {
            pause(who);
            if (!by_tunneld) changed_while_paused_ = true;
            if (missing) note_missing(who);
            return;
        }
        recent_repairs_.push_back(now);
        guard_->reapply();
        put_back("changed by " + who, missing);
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

void Keeper::pause(const std::string& who) {
    paused_until_ = std::chrono::steady_clock::now() + kPause;
    recent_repairs_.clear();
    changed_while_paused_ = false;
    spdlog::error(
        "firewall: table inet {} keeps being changed by {} (5 times in 10 s); is another "
        "tunneld using the same firewall.table? Repairs paused for {}",
        cfg_.firewall->table, who, format_duration(kPause));
    pause_timer_.expires_at(paused_until_);
    pause_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec && !stopped_) end_pause();
    });
}

void Keeper::end_pause() {
    paused_until_ = {};
    const bool foreign = changed_while_paused_;
    changed_while_paused_ = false;
    try {
        if (verify("the end of the pause")) return;
        if (!foreign) {
            spdlog::info("firewall: repairs of table inet {} resumed; the table is in place",
                         cfg_.firewall->table);
            return;
        }
        guard_->reapply();
        put_back("changed during the pause", false);
    } catch (const StartupError& e) {
        std::lock_guard lock(mutex_);
        status_.applied = false;
        status_.error = "could not be put back after the pause: " + std::string(e.what());
        spdlog::error("firewall: table inet {} could not be put back after the pause: {}",
                      cfg_.firewall->table, e.what());
    }
}

void Keeper::stop() {
    stopped_ = true;
    resolve_timer_.stop();
    pause_timer_.cancel();
    verify_timer_.stop();
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

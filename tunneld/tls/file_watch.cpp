#include "tunneld/tls/file_watch.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

namespace tunneld {

TlsFileWatch::TlsFileWatch(boost::asio::io_context& io, std::vector<std::string> paths,
                           Duration interval, std::function<void()> on_change)
    : timer_(io), paths_(std::move(paths)), interval_(interval), on_change_(std::move(on_change)) {}

TlsFileWatch::Stamp TlsFileWatch::stamp_of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return {};
    return {true, st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec,
            static_cast<long long>(st.st_size), static_cast<long long>(st.st_ino),
            st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec};
}

SettleRule::Verdict SettleRule::observe(const std::vector<FileStamp>& now) {
    if (now == loaded_) {
        pending_.clear();
        return Verdict::unchanged;
    }
    if (now == pending_) {  // unchanged since the last poll
        loaded_ = now;
        pending_.clear();
        return Verdict::settled;
    }
    pending_ = now;
    return Verdict::changing;
}

void TlsFileWatch::start() {
    std::vector<Stamp> loaded;
    for (const auto& p : paths_) loaded.push_back(stamp_of(p));
    rule_.emplace(std::move(loaded));
    stopped_ = false;
    arm();
}

void TlsFileWatch::stop() {
    stopped_ = true;
    timer_.cancel();
}

void TlsFileWatch::arm() {
    timer_.expires_after(interval_);
    timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec && !stopped_) poll();
    });
}

void TlsFileWatch::poll() {
    std::vector<Stamp> now;
    for (const auto& p : paths_) now.push_back(stamp_of(p));
    switch (rule_->observe(now)) {
        case SettleRule::Verdict::unchanged:
            break;
        case SettleRule::Verdict::changing:
            spdlog::info("TLS files changed; reloading once they stop changing");
            break;
        case SettleRule::Verdict::settled:
            on_change_();
            break;
    }
    arm();
}

}  // namespace tunneld

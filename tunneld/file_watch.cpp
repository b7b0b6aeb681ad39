#include "tunneld/file_watch.hpp"

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

void TlsFileWatch::start() {
    loaded_.clear();
    for (const auto& p : paths_) loaded_.push_back(stamp_of(p));
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
    if (now == loaded_) {
        pending_.clear();
    } else if (now == pending_) {  // settled: unchanged since the last poll
        loaded_ = now;
        pending_.clear();
        on_change_();
    } else {
        pending_ = now;
    }
    arm();
}

}  // namespace tunneld

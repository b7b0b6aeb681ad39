// Watches the TLS files (cert, key, CA bundle, CRL) by polling their stat()
// every second and calls back once a change has settled: a change is reported
// only when the files look the same on two polls in a row, so a file written in
// several steps (or a key written just before its certificate) is read once,
// complete. Polling rather than inotify: it sees renames over the file, edits
// through symlinks (Kubernetes secrets, certbot's live/), and files that did not
// exist yet, with one code path.
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <string>
#include <vector>

#include "tunneld/duration.hpp"

namespace tunneld {

class TlsFileWatch {
public:
    // `on_change` runs on `io`'s thread.
    TlsFileWatch(boost::asio::io_context& io, std::vector<std::string> paths, Duration interval,
                 std::function<void()> on_change);
    void start();
    void stop();

    // What stat() says of a file, as compared between polls.
    struct Stamp {
        bool exists = false;
        long long mtime_ns = 0, size = 0, inode = 0, ctime_ns = 0;
        bool operator==(const Stamp&) const = default;
    };
    static Stamp stamp_of(const std::string& path);

private:
    void arm();
    void poll();

    boost::asio::steady_timer timer_;
    std::vector<std::string> paths_;
    Duration interval_;
    std::function<void()> on_change_;
    std::vector<Stamp> loaded_;   // what the current material was read from
    std::vector<Stamp> pending_;  // a change seen on the last poll, not yet settled
    bool stopped_ = false;
};

}  // namespace tunneld

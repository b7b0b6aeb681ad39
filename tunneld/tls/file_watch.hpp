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
#include <optional>
#include <string>
#include <vector>

#include "tunneld/config/duration.hpp"

namespace tunneld {

// What stat() says of a file, as compared between polls.
struct FileStamp {
    bool exists = false;
    long long mtime_ns = 0, size = 0, inode = 0, ctime_ns = 0;
    bool operator==(const FileStamp&) const = default;
};

// The settle rule alone, without clock or filesystem: fed the stamps of every
// poll, it says when a change has settled (the same stamps on two polls in a
// row, and not those of the loaded files).
class SettleRule {
  public:
    enum class Verdict { unchanged, changing, settled };
    explicit SettleRule(std::vector<FileStamp> loaded) : loaded_(std::move(loaded)) {}
    // One poll's stamps. `settled` means: read the files now (they become the loaded ones).
    Verdict observe(const std::vector<FileStamp>& now);

  private:
    std::vector<FileStamp> loaded_;   // what the current material was read from
    std::vector<FileStamp> pending_;  // a change seen on the last poll, not yet settled
};

class TlsFileWatch {
  public:
    // `on_change` runs on `io`'s thread.
    TlsFileWatch(boost::asio::io_context& io, std::vector<std::string> paths, Duration interval,
                 std::function<void()> on_change);
    void start();
    void stop();

    using Stamp = FileStamp;
    static Stamp stamp_of(const std::string& path);

  private:
    void arm();
    void poll();

    boost::asio::steady_timer timer_;
    std::vector<std::string> paths_;
    Duration interval_;
    std::function<void()> on_change_;
    std::optional<SettleRule> rule_;
    bool stopped_ = false;
};

}  // namespace tunneld

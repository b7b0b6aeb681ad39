// Admission and bookkeeping of live connections: enforces
// limits.max_connections and lets the daemon close every live connection
// from its own thread when the drain time on SIGTERM runs out.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace tunneld {

// One admitted connection. `close` is set by the connection's coroutine and only
// ever called on `executor` while `alive`; the coroutine clears both before its
// sockets go away.
struct LiveConnection {
    boost::asio::any_io_executor executor;
    std::function<void()> close;
    bool alive = true;
    std::uint64_t id = 0;
};

// Clears c.close when a scope that the hook references ends.
struct CloseHook {
    LiveConnection& c;
    ~CloseHook() { c.close = nullptr; }
};

class ConnectionTable {
public:
    explicit ConnectionTable(std::size_t max_connections) : max_(max_connections) {}

    // Returns a new entry, or nullptr when max_connections are already live.
    std::shared_ptr<LiveConnection> admit(boost::asio::any_io_executor executor, std::uint64_t id);
    // Forgets `c` (called by the connection when it ends). Must run on c's executor.
    void release(const std::shared_ptr<LiveConnection>& c);
    std::size_t size() const;
    // Posts close() to every live connection's executor.
    void close_all();

    // Handshakes in progress per source address, for limits.max_handshakes_per_source.
    bool begin_handshake(const std::string& source, int limit);
    void end_handshake(const std::string& source);

private:
    mutable std::mutex mutex_;
    std::size_t max_;
    std::map<std::uint64_t, std::shared_ptr<LiveConnection>> live_;
    std::map<std::string, int> handshakes_;
};

}  // namespace tunneld

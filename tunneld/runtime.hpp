// What every listener and connection of a running node shares: the config,
// the I/O threads, the current TLS material and the live-connection table.
// Owned by Daemon; outlives every connection.
#pragma once
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "tunneld/backend_state.hpp"
#include "tunneld/config.hpp"
#include "tunneld/conn_log.hpp"
#include "tunneld/connection_table.hpp"
#include "tunneld/stats.hpp"
#include "tunneld/tls_context.hpp"

namespace tunneld {

// One io_context per worker thread; a connection lives on one of them.
class IoPool {
  public:
    explicit IoPool(unsigned threads);
    boost::asio::io_context& next();  // round robin
    void start();                     // starts the threads
    void stop_when_idle();            // lets run() return once no work is left
    void join();
    std::size_t size() const { return contexts_.size(); }
    boost::asio::io_context& at(std::size_t i) { return contexts_[i]; }

  private:
    std::deque<boost::asio::io_context> contexts_;
    std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guards_;
    std::vector<std::thread> threads_;
    std::atomic<std::size_t> next_{0};
};

struct Runtime {
    const Config& config;
    IoPool& pool;
    ConnectionTable connections;
    std::atomic<std::shared_ptr<const TlsMaterial>> tls;
    std::atomic<std::uint64_t> next_id{1};
    Stats stats;
    RefusalLog refusals{std::chrono::seconds(10)};  // limit refusals: one line per source per 10 s
    Latest<BackendState> backend;  // this node's database, as BackendMonitor saw it last

    Runtime(const Config& c, IoPool& p, std::shared_ptr<const TlsMaterial> material)
        : config(c),
          pool(p),
          connections(static_cast<std::size_t>(c.limits.max_connections)),
          tls(std::move(material)) {}
};

}  // namespace tunneld

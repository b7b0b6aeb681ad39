// The I/O threads: one io_context per worker thread, handed out round robin.
#pragma once
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <deque>
#include <string>
#include <thread>
#include <vector>

namespace tunneld {

// One io_context per worker thread; a connection lives on one of them.
class IoPool {
  public:
    // Threads are named "td-<name>-<i>" (top -H, /proc/PID/task/TID/comm).
    explicit IoPool(unsigned threads, std::string name = "io");
    // `workers:` as configured; 0 ("auto") = one per CPU, at most 8.
    static unsigned threads_for(unsigned configured);
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
    std::string name_;
};

}  // namespace tunneld

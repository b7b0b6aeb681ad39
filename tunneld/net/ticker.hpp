// The timer of a periodic loop that must end when told to.
//
// A plain steady_timer::cancel() misses a wait whose completion is already
// queued (the timer expired a moment before): the loop wakes with success,
// arms the timer again and runs on, and a shutdown that waits for the loop's
// thread to go idle waits for ever. A Ticker remembers that it was stopped.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

namespace tunneld {

class Ticker {
  public:
    explicit Ticker(boost::asio::io_context& io) : timer_(io) {}
    // Waits `d` (or until the deadline `at`); false once stop() was called,
    // before or during the wait: the loop should end. A stop() that falls
    // between two waits is seen by the next one, which then does not wait.
    boost::asio::awaitable<bool> sleep(std::chrono::steady_clock::duration d);
    boost::asio::awaitable<bool> sleep_until(std::chrono::steady_clock::time_point at);
    // On the io_context's thread (post it there from elsewhere).
    void stop() {
        stopped_ = true;
        timer_.cancel();
    }
    bool stopped() const { return stopped_; }

  private:
    boost::asio::steady_timer timer_;
    bool stopped_ = false;
};

}  // namespace tunneld

#include "tunneld/net/ticker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tunneld {

boost::asio::awaitable<bool> Ticker::sleep_until(std::chrono::steady_clock::time_point at) {
    if (stopped_) co_return false;
    timer_.expires_at(at);
    (void)co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    co_return !stopped_;
}

boost::asio::awaitable<bool> Ticker::sleep(std::chrono::steady_clock::duration d) {
    return sleep_until(std::chrono::steady_clock::now() + d);
}

}  // namespace tunneld

// Nonblocking reads and writes on a plaintext socket for the relay loops.
#pragma once
#include <sys/socket.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <cerrno>
#include <tuple>

#include "tunneld/relay/buffers.hpp"

namespace tunneld {

// Reads into `buffer` (taken from its pool when data is there). `more` says
// whether the last read filled the buffer: then more is probably queued and the
// read is a direct recv(2), holding on to the buffer. Otherwise the socket was
// drained: the buffer goes back and the read waits for readability first (the
// reactor's epoll_wait, no speculative recv, no epoll_ctl), then takes a buffer
// and reads. Per small message that is epoll_wait + recv, and an idle
// connection holds no buffer. Start with `more` = true: bytes may have arrived
// before the first wait could see their edge.
template <class Socket>
boost::asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> read_plain(
    Socket& s, RelayBuffer& buffer, bool& more) {
    namespace asio = boost::asio;
    using boost::system::error_code;
    for (;;) {
        if (!more) {
            buffer.release();
            auto [ec] = co_await s.async_wait(asio::socket_base::wait_read,
                                              asio::as_tuple(asio::use_awaitable));
            if (ec) co_return std::tuple{ec, std::size_t{0}};
        }
        auto buf = buffer.get();
        ssize_t n = ::recv(s.native_handle(), buf.data(), buf.size(), 0);
        if (n > 0) {
            more = static_cast<std::size_t>(n) == buf.size();
            co_return std::tuple{error_code{}, static_cast<std::size_t>(n)};
        }
        if (n == 0) co_return std::tuple{error_code(asio::error::eof), std::size_t{0}};
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            co_return std::tuple{error_code(errno, asio::error::get_system_category()),
                                 std::size_t{0}};
        more = false;
    }
}

// Writes all of [data, data + size), waiting for writability when the socket
// buffer is full.
template <class Socket>
boost::asio::awaitable<boost::system::error_code> write_plain(Socket& s, const char* data,
                                                              std::size_t size) {
    namespace asio = boost::asio;
    using boost::system::error_code;
    while (size > 0) {
        ssize_t n = ::send(s.native_handle(), data, size, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            size -= static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            co_return error_code(errno, asio::error::get_system_category());
        auto [ec] = co_await s.async_wait(asio::socket_base::wait_write,
                                          asio::as_tuple(asio::use_awaitable));
        if (ec) co_return ec;
    }
    co_return error_code{};
}

}  // namespace tunneld

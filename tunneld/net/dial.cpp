#include "tunneld/net/dial.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tunneld {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

Result<void> refused_by(const boost::system::error_code& ec) {
    if (ec) return Problem{ec.message()};
    return {};
}

asio::awaitable<Result<void>> resolve_and_connect(tcp::socket& socket, const Endpoint& ep,
                                                  std::optional<asio::ip::address> source) {
    boost::system::error_code not_literal;
    auto literal = asio::ip::make_address(ep.host, not_literal);
    if (source) {  // the config allows a source only with a literal address (inbound.source)
        if (not_literal)
            co_return Problem{"a source address needs a literal address, not " + ep.host};
        boost::system::error_code ec;
        socket.open(literal.is_v4() ? tcp::v4() : tcp::v6(), ec);
        if (!ec) socket.bind(tcp::endpoint(*source, 0), ec);
        if (ec) co_return Problem{"cannot bind to " + source->to_string() + ": " + ec.message()};
    }
    if (!not_literal) {  // no resolver round trip (a thread hop in Asio) for an address
        auto [ec] =
            co_await socket.async_connect(tcp::endpoint(literal, ep.port), as_tuple(use_awaitable));
        co_return refused_by(ec);
    }
    tcp::resolver resolver(socket.get_executor());
    auto [rec, results] =
        co_await resolver.async_resolve(ep.host, std::to_string(ep.port), as_tuple(use_awaitable));
    if (rec) co_return Problem{"cannot resolve " + ep.host + ": " + rec.message()};
    auto [cec, endpoint] = co_await asio::async_connect(socket, results, as_tuple(use_awaitable));
    co_return refused_by(cec);
}

template <class Op>
asio::awaitable<Result<void>> with_deadline(Op op, Duration timeout, auto& socket) {
    asio::steady_timer timer(socket.get_executor(), timeout);
    auto winner = co_await (std::move(op) || timer.async_wait(as_tuple(use_awaitable)));
    if (winner.index() == 1) {
        boost::system::error_code ignored;
        socket.close(ignored);
        co_return Problem{"timed out after " + format_duration(timeout), true};
    }
    co_return std::get<0>(std::move(winner));
}

asio::awaitable<Result<void>> connect_unix(asio::local::stream_protocol::socket& socket,
                                           std::string path) {
    auto [ec] = co_await socket.async_connect(asio::local::stream_protocol::endpoint(path),
                                              as_tuple(use_awaitable));
    co_return refused_by(ec);
}

}  // namespace

asio::awaitable<Result<void>> dial(tcp::socket& socket, const Endpoint& ep, Duration timeout,
                                   std::optional<asio::ip::address> source) {
    co_return co_await with_deadline(resolve_and_connect(socket, ep, source), timeout, socket);
}

asio::awaitable<Result<void>> dial(asio::local::stream_protocol::socket& socket,
                                   const std::string& path, Duration timeout) {
    co_return co_await with_deadline(connect_unix(socket, path), timeout, socket);
}

}  // namespace tunneld

#include "tunneld/health/patroni_leader.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>

#include "tunneld/net/dial.hpp"

namespace tunneld {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

asio::awaitable<PatroniLeader> ask_patroni_leader(asio::any_io_executor ex, const Endpoint& api,
                                                  Duration timeout) {
    PatroniLeader out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    asio::ip::tcp::socket sock(ex);
    if (auto dialed = co_await dial(sock, api, timeout); !dialed) {
        out.error = "Patroni's REST API at " + api.to_string() + ": " + dialed.error().what;
        co_return out;
    }
    beast::tcp_stream stream(std::move(sock));
    stream.expires_at(deadline);
    http::request<http::empty_body> req{http::verb::get, "/leader", 11};
    req.set(http::field::host, api.to_string());
    req.set(http::field::user_agent, "tunneld");
    req.set(http::field::connection, "close");
    auto [wec, wn] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
    if (wec) {
        out.error = "Patroni's REST API at " + api.to_string() + ": " + wec.message();
        co_return out;
    }
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024);  // Patroni's status JSON is a few hundred bytes
    auto [rec, rn] =
        co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (rec) {
        out.error = "Patroni's REST API at " + api.to_string() + ": " +
                    (rec == beast::error::timeout ? "no answer within " + format_duration(timeout)
                                                  : rec.message());
        co_return out;
    }
    auto status = parser.get().result_int();
    if (status == 200 || status == 503) {
        out.answered = true;
        out.leader = status == 200;
    } else {
        out.error = "Patroni's REST API at " + api.to_string() + " answered GET /leader with " +
                    std::to_string(status);
    }
    co_return out;
}

}  // namespace tunneld
